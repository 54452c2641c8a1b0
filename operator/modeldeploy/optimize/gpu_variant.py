"""The float16-compute SavedModel for GPU pods (`--quantize float16`), built beside the published one.

half.py rewrites the graph; this module saves the variant, checks it on this CPU against the float32 baseline and
the published SavedModel, and leaves it out with a warning when it fails: a side artefact never fails a publish.
"""
from __future__ import annotations

import logging
import os
import shutil

import numpy as np

from modeldeploy.optimize import evaluate, export, half, warmup
from modeldeploy.optimize.measure import GPU_FLOAT16
from modeldeploy.storage.errors import first_line

log = logging.getLogger(__name__)


def build(frozen: tuple, specs, out_dir: str, base: dict, opt: dict, data, task, sample, output: str,
          max_drop: float | None, warnings: list[str]) -> dict:
    """The SavedModel that computes in float16 for GPU pods (half.py), in `<out_dir>/gpu-float16/` with its
    warmup records, and its figures: its predictions on this CPU against the float32 baseline (`base`) and the
    published SavedModel (`opt`); `frozen` is the trained graph as freeze_for_serving gave it. No speed: half on
    a CPU is emulated, so its latency here says nothing of a GPU's.
    A variant that cannot be built or run, answers non-finite values or exceeds maxAccuracyDrop is left out
    with a warning ({"skipped": reason}); the version is published without it."""
    path = os.path.join(out_dir, GPU_FLOAT16)
    try:
        export.save(*half.to_half(*frozen), specs, path)
        figures = {"dir": GPU_FLOAT16, "bytes": evaluate.dir_bytes(path), "compressedBytes": evaluate.gzip_bytes(path)}
        x = data.x_val if data is not None else sample
        pred = evaluate.predict(evaluate.SavedModelRunner(path, output), x)
        # What CPU pods serve, on the same rows: the difference is float16 compute alone.
        served = opt["pred"] if data is not None else evaluate.predict(evaluate.SavedModelRunner(out_dir, output), x)
        if np.issubdtype(pred.dtype, np.floating) and not np.all(np.isfinite(pred)):
            raise ValueError(f"non-finite outputs (float16 overflow) on {int(np.sum(~np.isfinite(pred)))} values")
        figures["rows"] = len(pred)
        if np.issubdtype(pred.dtype, np.number):
            figures["maxAbsDiff"] = round(float(np.max(np.abs(pred.astype(np.float64) - served), initial=0.0)), 6)
        if task.classification:
            figures["agreementWithSavedModel"] = evaluate.agreement(served, pred)
        if data is not None:
            metric = evaluate.score(pred, data.y_val, task.classification)
            figures.update(accuracy=round(metric, 6),
                           accuracyDrop=evaluate.drop(base["metric"], metric, task.classification))
            if task.classification:
                figures["agreement"] = evaluate.agreement(base["pred"], pred)
            if max_drop is not None and figures["accuracyDrop"] > max_drop + 1e-12:
                raise ValueError(f"accuracy drop {figures['accuracyDrop']:.4f} exceeds maxAccuracyDrop {max_drop:.4f}")
        warmup.write(path, sample, specs)
    except Exception as exc:  # noqa: BLE001 - a side artefact: GPU pods then serve the SavedModel itself
        shutil.rmtree(path, ignore_errors=True)
        reason = first_line(exc, 500)
        warnings.append(f"{GPU_FLOAT16} skipped: {reason}")
        log.warning("%s skipped (GPU pods serve the float32-compute SavedModel): %s", GPU_FLOAT16, reason)
        return {"skipped": reason}
    figures["note"] = "float16 compute; speed measured on a GPU only"
    return figures

