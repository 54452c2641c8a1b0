"""Magnitude pruning that reaches its target whatever the dataset size.

Two paths, one schedule: sparsity ramps from 0 to the target over the first ~70% of the fine-tuning steps
that exist (PolynomialDecay, cubic, updating at a frequency that fires within them), then training goes on
with the masks held, and a final prune sets every kernel to exactly the target (a kernel may fall short by
rounding, or when there are only a few steps).
- tf-keras models: tensorflow-model-optimization's `prune_low_magnitude`, then the final prune.
- Keras 3 models and SavedModels (tfmot prunes tf-keras only): the same schedule on the model's own trainable
  weight matrices (rank >= 2: kernels, embeddings, recurrent kernels), fine-tuned with a GradientTape through
  the serving function and masked after every step.
Without training data (or with 0 epochs), the smallest-magnitude weights of each kernel are zeroed at once.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from modeldeploy.optimize import dataset as datasets
from modeldeploy.optimize import training
from modeldeploy.storage.errors import UnsupportedModel

log = logging.getLogger(__name__)

# Kernels tfmot prunes (Dense/Conv kernels, depthwise and pointwise kernels); biases and norms stay dense.
PRUNABLE_SUFFIXES = ("kernel:0", "depthwise_kernel:0", "pointwise_kernel:0")
RAMP_SHARE = 0.7
NOTHING_TO_PRUNE = ("--prune-sparsity: the model has no trainable weight matrices to prune (a frozen graph keeps "
                    "its weights as constants); quantize it without pruning, or give the model with its variables")


def ramp(total_steps: int) -> tuple[int, int]:
    """(end step of the ramp, update frequency): the last update at end_step fires within `total_steps`."""
    frequency = max(1, min(100, total_steps // 10))
    end_step = (int(total_steps * RAMP_SHARE) // frequency) * frequency
    return end_step, frequency


def schedule_for(sparsity: float, total_steps: int):
    """A tfmot pruning schedule that reaches `sparsity` exactly at a step where it fires, within `total_steps`."""
    import tensorflow_model_optimization as tfmot

    end_step, frequency = ramp(total_steps)
    if end_step <= 0:
        # Too few steps to ramp: jump to the target at step 0 and keep the masks for the rest.
        return tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0, frequency=frequency)
    return tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0,
                                                end_step=end_step, frequency=frequency)


def sparsity_at(step: int, target: float, end_step: int) -> float:
    """The polynomial (cubic) schedule tfmot's PolynomialDecay follows, from 0 to `target` at `end_step`."""
    if end_step <= 0 or step >= end_step:
        return target
    return target * (1.0 - (1.0 - step / end_step) ** 3)


def mask(w: np.ndarray, sparsity: float) -> np.ndarray:
    """Boolean keep-mask zeroing exactly round(size * sparsity) smallest-magnitude entries (ties by rank)."""
    k = int(round(w.size * sparsity))
    keep = np.ones(w.size, dtype=bool)
    if k > 0:
        keep[np.argsort(np.abs(w).ravel(), kind="stable")[:k]] = False
    return keep.reshape(w.shape)


def one_shot_prune(model, sparsity: float):
    """Zero the `sparsity` fraction of smallest-magnitude weights in each prunable kernel of a tf-keras model
    (in place; a kernel already as sparse keeps its zeros)."""
    for layer in model.layers:
        for weight in layer.weights:
            if weight.name.endswith(PRUNABLE_SUFFIXES) and len(weight.shape) >= 2:
                w = weight.numpy()
                weight.assign(np.where(mask(w, sparsity), w, 0).astype(w.dtype))
    return model


def fine_tune_prune(model, sparsity: float, epochs: int, data: datasets.Dataset, task: training.Task,
                    batch_size: int, learning_rate: float):
    """Prune a tf-keras model while fine-tuning; returns the stripped model, every kernel at the target."""
    import tensorflow_model_optimization as tfmot

    steps = epochs * math.ceil(data.rows_train / batch_size)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule_for(sparsity, steps))
    training.fit(pruned, data.x_train, data.y_train, task, epochs, batch_size, learning_rate, data.output,
                 callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    return one_shot_prune(tfmot.sparsity.keras.strip_pruning(pruned), sparsity)


def prune(model, sparsity: float, epochs: int, data, task: training.Task, batch_size: int,
          learning_rate: float):
    """Prune a tf-keras `model` to `sparsity`: fine-tuned when epochs > 0 and training data exist, else
    one-shot."""
    if epochs > 0 and data is not None and data.has_train:
        log.info("pruning to %.2f while fine-tuning %d epoch(s) on %d rows", sparsity, epochs, data.rows_train)
        return fine_tune_prune(model, sparsity, epochs, data, task, batch_size, learning_rate)
    log.info("one-shot magnitude pruning to %.2f (no fine-tuning)", sparsity)
    return one_shot_prune(model, sparsity)


def prunable(variables) -> list:
    """The weight matrices magnitude pruning applies to: trainable floating variables of rank >= 2."""
    return [v for v in variables if v.dtype.is_floating and len(v.shape) >= 2]


def prune_variables(fn, variables, inputs: dict, sparsity: float, epochs: int, data, task: training.Task,
                    batch_size: int, learning_rate: float) -> int:
    """Prune the weight matrices among `variables` (read by `fn`, {input: tensor} -> {output: tensor}) in
    place, fine-tuning through `fn` when epochs > 0 and training data exist; returns the steps trained."""
    import tensorflow as tf
    import tf_keras

    targets = prunable(variables)
    if not targets:
        raise UnsupportedModel(NOTHING_TO_PRUNE)

    def apply(masks):
        for v, m in zip(targets, masks):
            v.assign(tf.where(m, v, tf.zeros_like(v)))

    def masks_at(s: float):
        return [tf.constant(mask(v.numpy(), s)) for v in targets]

    trains = epochs > 0 and data is not None and data.has_train
    steps = epochs * math.ceil(data.rows_train / batch_size) if trains else 0
    if steps == 0:
        log.info("one-shot magnitude pruning of %d weight matrices to %.2f (no fine-tuning)", len(targets), sparsity)
        apply(masks_at(sparsity))
        return 0
    log.info("pruning %d weight matrices to %.2f while fine-tuning %d epoch(s) (%d steps) on %d rows",
             len(targets), sparsity, epochs, steps, data.rows_train)
    loss_fn, labels = training.loss_for(task, data.y_train)
    trainable = [v for v in variables if v.trainable]
    optimizer = tf_keras.optimizers.Adam(learning_rate)
    dtypes = {k: spec.dtype for k, spec in inputs.items()}

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, fn(x)[data.output])
        grads = tape.gradient(loss, trainable)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, trainable) if g is not None])
        return loss

    end_step, frequency = ramp(steps)
    rng = np.random.default_rng(0)
    masks, step = None, 0
    for _ in range(epochs):
        order = rng.permutation(data.rows_train)
        for start in range(0, data.rows_train, batch_size):
            if step <= end_step and step % frequency == 0:
                masks = masks_at(sparsity_at(step, sparsity, end_step))
                apply(masks)
            index = order[start:start + batch_size]
            x = {k: tf.constant(v[index], dtype=dtypes[k]) for k, v in data.x_train.items()}
            train_step(x, tf.constant(labels[index]))
            apply(masks)
            step += 1
    apply(masks_at(sparsity))
    return steps
