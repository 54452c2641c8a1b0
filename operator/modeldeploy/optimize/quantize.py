"""Quantization modes: how weights are stored in the SavedModel, QAT, and the TFLite artefact beside it.

| mode    | SavedModel weights            | model.tflite published beside it                          |
|---------|-------------------------------|-----------------------------------------------------------|
| none    | float32                       | no                                                        |
| float16 | float16 (cast at load)        | no (float16 TFLite only helps GPU delegates)              |
| dynamic | int8 per channel              | dynamic-range: int8 weights, float activations            |
| int8    | int8 per channel              | full-integer: int8 weights and activations, calibrated    |
| qat     | int8 per channel, trained     | full-integer from the quantization-aware trained model    |
The TFLite model is the better CPU artefact (int8 kernels, low per-call overhead); the SavedModel is what TF
Serving loads, on CPU or GPU. float16 also publishes `gpu-float16/`, a SavedModel that computes in float16, for
GPU pods (half.py).
"""
from __future__ import annotations

import logging
import os
import sys

import numpy as np
import tensorflow as tf

from modeldeploy.api.spec import TFLITE_QUANTIZATION_MODES
from modeldeploy.optimize import child
from modeldeploy.optimize import training
from modeldeploy.storage.errors import first_line

log = logging.getLogger(__name__)

STORAGE = {"none": "float32", "float16": "float16", "dynamic": "int8", "int8": "int8", "qat": "int8"}
TFLITE_MODES = TFLITE_QUANTIZATION_MODES    # the modes that publish model.tflite (spec.serving.runtime tflite)
TFLITE_TIMEOUT_S = float(os.environ.get("MODELDEPLOY_TFLITE_TIMEOUT_S", "900"))


def quantization_aware_train(model, epochs: int, data, task: training.Task, batch_size: int,
                             learning_rate: float, pruned: bool):
    """Wrap `model` for QAT (keeping pruned zeros when `pruned`) and train it on the dataset's training
    split; returns the QAT model."""
    import tensorflow_model_optimization as tfmot

    if pruned:
        # Prune-preserving QAT: the fake-quant weights keep the zeros the pruning made.
        annotated = tfmot.quantization.keras.quantize_annotate_model(model)
        qat = tfmot.quantization.keras.quantize_apply(
            annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
    else:
        qat = tfmot.quantization.keras.quantize_model(model)
    log.info("quantization-aware training for %d epoch(s) on %d rows", epochs, data.rows_train)
    return training.fit(qat, data.x_train, data.y_train, task, epochs, batch_size, learning_rate, data.output)


def to_tflite(saved_model_dir: str, mode: str, calibration: dict | None) -> bytes:
    """Convert a float SavedModel (with fake-quant ops for QAT) to the mode's TFLite model, with TFLite's
    builtin ops only (what a TFLite runtime without the TensorFlow-ops delegate runs). `calibration`: input
    name -> rows, already of each input's dtype. Raises what the converter raises."""
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "int8":
        if not calibration:
            raise ValueError("int8 needs calibration data")
        n = min(len(v) for v in calibration.values())

        def representative():
            for i in range(n):
                yield {k: v[i:i + 1] for k, v in calibration.items()}

        converter.representative_dataset = representative
        # Full integer: fail rather than silently keep float ops. Inputs/outputs keep their dtypes so clients
        # send the same tensors to every artefact.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def to_tflite_isolated(saved_model_dir: str, mode: str, calibration: dict | None, specs: list, work: str) -> bytes:
    """`to_tflite` in a child process. The converter and its int8 calibrator are native code that can crash
    the whole process (TensorFlow 2.21 segfaults calibrating a tf.while_loop): in a child, a crash costs the
    side artefact only, never the Job and its SavedModel. Raises RuntimeError with one line saying why."""
    # Rows cast to each input's dtype; strings stay numpy strings (an object array would need pickle).
    dtypes = {s.name: None if s.dtype == tf.string else s.dtype.as_numpy_dtype for s in specs}
    calib = os.path.join(work, "calibration.npz")
    np.savez(calib, **{k: np.asarray(v).astype(dtypes[k] or np.asarray(v).dtype)
                       for k, v in (calibration or {}).items()})
    out = os.path.join(work, "converted.tflite")
    child.run_module("modeldeploy.optimize.quantize", [saved_model_dir, mode, calib, out], "the TFLite converter",
                     TFLITE_TIMEOUT_S)
    with open(out, "rb") as fh:
        return fh.read()


def _main(argv: list[str]) -> int:
    """The child of `to_tflite_isolated`: SAVED_MODEL_DIR MODE CALIBRATION_NPZ OUT."""
    saved_model_dir, mode, calib, out = argv
    with np.load(calib, allow_pickle=False) as npz:
        calibration = {k: npz[k] for k in npz.files} or None
    try:
        converted = to_tflite(saved_model_dir, mode, calibration)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        print(first_line(exc), file=sys.stderr)
        return 3
    with open(out, "wb") as fh:
        fh.write(converted)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
