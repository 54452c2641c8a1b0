"""Quantization modes: how weights are stored in the SavedModel, QAT, and the TFLite artefact beside it.

| mode    | SavedModel weights            | model.tflite published beside it                          |
|---------|-------------------------------|-----------------------------------------------------------|
| none    | float32                       | no                                                        |
| float16 | float16 (cast at load)        | no (float16 TFLite only helps GPU delegates)              |
| dynamic | int8 per channel              | dynamic-range: int8 weights, float activations            |
| int8    | int8 per channel              | full-integer: int8 weights and activations, calibrated    |
| qat     | int8 per channel, trained     | full-integer from the quantization-aware trained model    |
The TFLite model is the better CPU artefact (int8 kernels, low per-call overhead); the SavedModel is what TF
Serving loads, on CPU or GPU.
"""
from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from modeldeploy.optimize import training

log = logging.getLogger(__name__)

STORAGE = {"none": "float32", "float16": "float16", "dynamic": "int8", "int8": "int8", "qat": "int8"}
TFLITE_MODES = ("dynamic", "int8", "qat")


def quantization_aware_train(model, epochs: int, x, y, task: training.Task, batch_size: int,
                             learning_rate: float, pruned: bool):
    """Wrap `model` for QAT (keeping pruned zeros when `pruned`) and train it; returns the QAT model."""
    import tensorflow_model_optimization as tfmot

    if pruned:
        # Prune-preserving QAT: the fake-quant weights keep the zeros the pruning made.
        annotated = tfmot.quantization.keras.quantize_annotate_model(model)
        qat = tfmot.quantization.keras.quantize_apply(
            annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
    else:
        qat = tfmot.quantization.keras.quantize_model(model)
    log.info("quantization-aware training for %d epoch(s) on %d rows", epochs, len(x))
    return training.fit(qat, x, y, task, epochs, batch_size, learning_rate)


def to_tflite(saved_model_dir: str, mode: str, calibration: np.ndarray | None) -> bytes:
    """Convert a float SavedModel (with fake-quant ops for QAT) to the mode's TFLite model."""
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "int8":
        if calibration is None or not len(calibration):
            raise ValueError("int8 needs calibration data")

        def representative():
            for row in calibration:
                yield [row[None, ...].astype(np.float32)]

        converter.representative_dataset = representative
        # Full integer: fail rather than silently keep float ops. Inputs/outputs stay float32 so clients
        # send the same tensors to every artefact.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()
