"""Magnitude pruning with tensorflow-model-optimization, or one-shot when there is nothing to train on.

With training data, `prune_low_magnitude` ramps sparsity from 0 to the target with a PolynomialDecay schedule
over the first ~70% of the fine-tuning steps, then fine-tunes at the target. The schedule's frequency and
end step are derived from the real step count: a schedule whose update never fires within training leaves the
model dense (the pipeline also measures the exported weights and fails if sparsity falls short).
Without training data (or with 0 epochs), the smallest-magnitude weights of each kernel are zeroed at once,
per layer, like tfmot's masks.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from modeldeploy.optimize import training

log = logging.getLogger(__name__)

# Kernels tfmot prunes (Dense/Conv kernels, depthwise and pointwise kernels); biases and norms stay dense.
PRUNABLE_SUFFIXES = ("kernel:0", "depthwise_kernel:0", "pointwise_kernel:0")


def schedule_for(sparsity: float, total_steps: int):
    """A pruning schedule that reaches `sparsity` exactly at a step where it fires, within `total_steps`."""
    import tensorflow_model_optimization as tfmot

    frequency = max(1, min(100, total_steps // 10))
    end_step = (int(total_steps * 0.7) // frequency) * frequency
    if end_step <= 0:
        # Too few steps to ramp: jump to the target at step 0 and keep the masks for the rest.
        return tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0, frequency=frequency)
    return tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0,
                                                end_step=end_step, frequency=frequency)


def fine_tune_prune(model, sparsity: float, epochs: int, x, y, task: training.Task, batch_size: int,
                    learning_rate: float):
    """Prune while fine-tuning on (x, y); returns the stripped Keras model (plain layers, zeros in kernels)."""
    import tensorflow_model_optimization as tfmot

    steps = epochs * math.ceil(len(x) / batch_size)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule_for(sparsity, steps))
    training.fit(pruned, x, y, task, epochs, batch_size, learning_rate,
                 callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    return tfmot.sparsity.keras.strip_pruning(pruned)


def one_shot_prune(model, sparsity: float):
    """Zero the `sparsity` fraction of smallest-magnitude weights in each prunable kernel (in place)."""
    for layer in model.layers:
        for weight in layer.weights:
            if not weight.name.endswith(PRUNABLE_SUFFIXES) or len(weight.shape) < 2:
                continue
            w = weight.numpy()
            k = int(round(w.size * sparsity))
            if k == 0:
                continue
            threshold = np.partition(np.abs(w).ravel(), k - 1)[k - 1]
            mask = np.abs(w) > threshold
            # Ties at the threshold could leave fewer zeros than asked; zero exactly k by rank instead.
            if w.size - mask.sum() != k:
                order = np.argsort(np.abs(w).ravel(), kind="stable")
                flat = np.ones(w.size, dtype=bool)
                flat[order[:k]] = False
                mask = flat.reshape(w.shape)
            weight.assign(np.where(mask, w, 0).astype(w.dtype))
    return model


def prune(model, sparsity: float, epochs: int, data, task: training.Task, batch_size: int,
          learning_rate: float):
    """Prune `model` to `sparsity`: fine-tuned when epochs > 0 and training data exist, else one-shot."""
    if epochs > 0 and data is not None and data.has_train:
        log.info("pruning to %.2f while fine-tuning %d epoch(s) on %d rows", sparsity, epochs, len(data.x_train))
        return fine_tune_prune(model, sparsity, epochs, data.x_train, data.y_train, task, batch_size,
                               learning_rate)
    log.info("one-shot magnitude pruning to %.2f (no fine-tuning)", sparsity)
    return one_shot_prune(model, sparsity)
