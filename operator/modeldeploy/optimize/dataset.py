"""Datasets: one `.npz` file with `x_train`, `y_train`, `x_val`, `y_val` (numpy only, no TensorFlow).

- `x_*`: inputs, shape (N, *model input shape without the batch dimension), any numeric dtype (cast to the
  model's input dtype).
- `y_*`: for classifiers integer labels (N,) or (N, 1), or one-hot (N, classes); for regressors floats with
  the model's output shape.
- `x_val`/`y_val` alone suffice when nothing is trained (no fine-tuning, no QAT): they are used for the
  accuracy gate and, for int8, calibration.
Loaded with allow_pickle=False: a dataset is data, never code.
"""
from __future__ import annotations

import dataclasses
import io

import numpy as np

from modeldeploy.storage.errors import DatasetMismatch

KEYS = ("x_train", "y_train", "x_val", "y_val")


@dataclasses.dataclass
class Dataset:
    """Arrays of one dataset; the training pair may be None."""

    x_val: np.ndarray
    y_val: np.ndarray
    x_train: np.ndarray | None = None
    y_train: np.ndarray | None = None

    @property
    def has_train(self) -> bool:
        return self.x_train is not None and self.y_train is not None

    def calibration(self, n: int = 256) -> np.ndarray:
        """Inputs for int8 calibration: training inputs when present (never the data we evaluate on)."""
        x = self.x_train if self.x_train is not None else self.x_val
        return x[:n]


def from_bytes(data: bytes, uri: str, need_train: bool) -> Dataset:
    """Parse .npz bytes; errors name the missing array or the shape and what to fix."""
    try:
        npz = np.load(io.BytesIO(data), allow_pickle=False)
        arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not an npz we can read"
        raise DatasetMismatch(f"--dataset {uri}: not a readable .npz file ({exc}); save it with "
                              "numpy.savez(path, x_train=..., y_train=..., x_val=..., y_val=...)") from None
    required = list(KEYS) if need_train else ["x_val", "y_val"]
    missing = [k for k in required if k not in arrays]
    if missing:
        why = " (fine-tuning / QAT trains on x_train, y_train)" if need_train else ""
        raise DatasetMismatch(f"--dataset {uri}: missing array(s) {', '.join(missing)}{why}; it has "
                              f"{', '.join(sorted(arrays)) or 'none'}")
    ds = Dataset(x_val=arrays["x_val"], y_val=arrays["y_val"],
                 x_train=arrays.get("x_train"), y_train=arrays.get("y_train"))
    for x_key, y_key in (("x_val", "y_val"), ("x_train", "y_train")):
        x, y = getattr(ds, x_key), getattr(ds, y_key)
        if x is None or y is None:
            continue
        if len(x) != len(y):
            raise DatasetMismatch(f"--dataset {uri}: {x_key} has {len(x)} rows but {y_key} has {len(y)}")
        if len(x) == 0:
            raise DatasetMismatch(f"--dataset {uri}: {x_key} is empty")
    return ds


def check_fits(ds: Dataset, input_shape: tuple, output_shape: tuple, uri: str) -> None:
    """Check input and label shapes against the model's (batch dimension excluded, None = any)."""
    want_x = tuple(input_shape[1:])
    for key in ("x_val", "x_train"):
        x = getattr(ds, key)
        if x is None:
            continue
        got = tuple(x.shape[1:])
        if len(got) != len(want_x) or any(w is not None and w != g for w, g in zip(want_x, got)):
            raise DatasetMismatch(f"--dataset {uri}: {key} rows have shape {got} but the model takes "
                                  f"{_shape(want_x)}; reshape the data (e.g. add a channel axis)")
    out = tuple(output_shape[1:])
    for key in ("y_val", "y_train"):
        y = getattr(ds, key)
        if y is None:
            continue
        if is_classification(y, out):
            labels = y.reshape(len(y), -1)
            classes = out[-1] if out else None
            if labels.shape[1] == 1 and classes and classes > 1 and labels.max() >= classes:
                raise DatasetMismatch(f"--dataset {uri}: {key} has label {int(labels.max())} but the model has "
                                      f"{classes} outputs (labels must be 0..{classes - 1})")
            if labels.shape[1] > 1 and classes and labels.shape[1] != classes:
                raise DatasetMismatch(f"--dataset {uri}: {key} is one-hot with {labels.shape[1]} columns but the "
                                      f"model has {classes} outputs")
        elif tuple(y.shape[1:]) not in (out, out[:-1] if out and out[-1] == 1 else out):
            raise DatasetMismatch(f"--dataset {uri}: {key} rows have shape {tuple(y.shape[1:])} but the model "
                                  f"outputs {_shape(out)}")


def is_classification(y: np.ndarray, output_shape: tuple) -> bool:
    """Integer (or one-hot) labels mean a classifier; float targets mean a regressor (MSE)."""
    if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        return True
    flat = y.reshape(len(y), -1)
    classes = output_shape[-1] if output_shape else 1
    # Float one-hot labels (rows of 0/1 summing to 1) are a classifier too.
    return bool(classes and classes > 1 and flat.shape[1] == classes and np.all((flat == 0) | (flat == 1))
                and np.all(flat.sum(axis=1) == 1))


def labels(y: np.ndarray) -> np.ndarray:
    """Class indices from integer labels or one-hot rows."""
    flat = y.reshape(len(y), -1)
    return flat[:, 0].astype(np.int64) if flat.shape[1] == 1 else flat.argmax(axis=1)


def _shape(shape: tuple) -> str:
    return "(" + ", ".join("any" if d is None else str(d) for d in shape) + ")"
