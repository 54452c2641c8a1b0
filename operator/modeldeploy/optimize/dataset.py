"""Datasets: one `.npz` file with inputs and labels for training and validation (numpy only, no TensorFlow).

- Inputs: `x_train`, `x_val` for a model with one input; for a model whose serving signature has several
  inputs, one array per input named `x_train.<input>`, `x_val.<input>` (`x_val.ids`, `x_val.mask`). Shape
  (N, *that input's shape without the batch dimension); numbers are cast to the input's dtype, strings
  (numpy unicode or bytes arrays, never objects) feed string inputs.
- Labels: `y_train`, `y_val` for the output the gate scores: the model's only output, or, with several
  outputs, the one named by `y_val.<output>` (`y_train.<output>`). For classifiers integer labels (N,) or
  (N, 1), or one-hot (N, classes); for regressors floats with the output's shape.
- The validation pair alone suffices when nothing is trained (no fine-tuning, no QAT): it is used for the
  accuracy gate and, for int8, calibration.
Loaded with allow_pickle=False: a dataset is data, never code.
"""
from __future__ import annotations

import dataclasses
import io

import numpy as np

from modeldeploy.storage.errors import DatasetMismatch

SPLITS = ("train", "val")


@dataclasses.dataclass
class Dataset:
    """Arrays of one dataset: inputs by serving input name, labels of one output; training may be None."""

    x_val: dict[str, np.ndarray]
    y_val: np.ndarray
    output: str                                   # the output key the labels belong to
    x_train: dict[str, np.ndarray] | None = None
    y_train: np.ndarray | None = None

    @property
    def has_train(self) -> bool:
        return self.x_train is not None and self.y_train is not None

    @property
    def rows_train(self) -> int:
        return len(self.y_train) if self.y_train is not None else 0

    def calibration(self, n: int = 256) -> dict[str, np.ndarray]:
        """Inputs for int8 calibration: training inputs when present (never the data we evaluate on)."""
        x = self.x_train if self.x_train is not None else self.x_val
        return take(x, slice(0, n))


def take(x: dict[str, np.ndarray], index) -> dict[str, np.ndarray]:
    """The same rows (a slice or index array) of every input."""
    return {k: v[index] for k, v in x.items()}


def rows(x: dict[str, np.ndarray]) -> int:
    return len(next(iter(x.values())))


def _read(data: bytes, uri: str) -> dict[str, np.ndarray]:
    try:
        npz = np.load(io.BytesIO(data), allow_pickle=False)
        return {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not an npz we can read"
        raise DatasetMismatch(f"--dataset {uri}: not a readable .npz file ({exc}); save it with "
                              "numpy.savez(path, x_train=..., y_train=..., x_val=..., y_val=...)") from None


def from_bytes(data: bytes, uri: str, need_train: bool, inputs: list[str], outputs: list[str]) -> Dataset:
    """Parse .npz bytes for a model with these serving input and output names; errors name the missing
    array (and the input or output it is for) or the shape, and what to fix."""
    arrays = _read(data, uri)
    labelled = [o for o in outputs if f"y_val.{o}" in arrays]
    if len(outputs) > 1 and len(labelled) != 1:
        raise DatasetMismatch(f"--dataset {uri}: the model has outputs {', '.join(outputs)}; name the one the "
                              f"labels are for as y_val.<output> (and y_train.<output>), exactly one of them; "
                              f"it has {', '.join(sorted(arrays)) or 'none'}")
    output = labelled[0] if labelled else outputs[0]
    y_name = f"y_{{}}.{output}" if labelled else "y_{}"
    x_names = {k: (f"x_{{}}.{k}" if len(inputs) > 1 or f"x_val.{k}" in arrays else "x_{}") for k in inputs}
    parts = {}
    for split in SPLITS if need_train else ("val",):
        missing = [n.format(split) for n in [*x_names.values(), y_name] if n.format(split) not in arrays]
        if missing:
            why = " (fine-tuning / QAT trains on the training split)" if split == "train" else ""
            raise DatasetMismatch(f"--dataset {uri}: missing array(s) {', '.join(missing)}{why}; "
                                  f"{_naming(inputs)}; it has {', '.join(sorted(arrays)) or 'none'}")
    for split in SPLITS:
        if not all(n.format(split) in arrays for n in [*x_names.values(), y_name]):
            continue
        x = {k: arrays[n.format(split)] for k, n in x_names.items()}
        y = arrays[y_name.format(split)]
        for k, v in x.items():
            if v.dtype == object:
                raise DatasetMismatch(f"--dataset {uri}: {x_names[k].format(split)} holds Python objects; "
                                      "store numbers or fixed-width strings")
            if len(v) != len(y):
                raise DatasetMismatch(f"--dataset {uri}: {x_names[k].format(split)} has {len(v)} rows but "
                                      f"{y_name.format(split)} has {len(y)}")
        if len(y) == 0:
            raise DatasetMismatch(f"--dataset {uri}: {y_name.format(split)} is empty")
        parts[split] = (x, y)
    x_val, y_val = parts["val"]
    x_train, y_train = parts.get("train", (None, None))
    return Dataset(x_val=x_val, y_val=y_val, output=output, x_train=x_train, y_train=y_train)


def _naming(inputs: list[str]) -> str:
    if len(inputs) == 1:
        return "inputs are x_train/x_val, labels y_train/y_val"
    return ("the model's serving inputs are " + ", ".join(inputs) + ": one array per input, x_val.<input> "
            "and x_train.<input>, labels y_val/y_train")


def check_fits(ds: Dataset, inputs: dict, output_shape: tuple, uri: str) -> None:
    """Check input and label shapes against the model's (`inputs`: name -> TensorSpec-like with .shape and
    .dtype; batch dimension excluded, None = any)."""
    for split, x in (("val", ds.x_val), ("train", ds.x_train)):
        for key, v in (x or {}).items():
            spec = inputs[key]
            want = tuple(spec.shape[1:])
            got = tuple(v.shape[1:])
            name = f"x_{split}.{key}" if len(inputs) > 1 else f"x_{split}"
            if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
                raise DatasetMismatch(f"--dataset {uri}: {name} rows have shape {got} but input {key!r} takes "
                                      f"{_shape(want)}; reshape the data (e.g. add a channel axis)")
            is_string = getattr(spec.dtype, "name", str(spec.dtype)) == "string"
            if is_string != (v.dtype.kind in "US"):
                raise DatasetMismatch(f"--dataset {uri}: {name} has dtype {v.dtype} but input {key!r} takes "
                                      f"{getattr(spec.dtype, 'name', spec.dtype)}")
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
