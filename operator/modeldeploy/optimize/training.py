"""Fine-tuning helpers shared by pruning and quantization-aware training: task detection, loss, fit."""
from __future__ import annotations

import dataclasses

import numpy as np

from modeldeploy.optimize import dataset as datasets


@dataclasses.dataclass(frozen=True)
class Task:
    """What the model predicts: classes (accuracy) or values (MSE); whether outputs are logits."""

    classification: bool
    from_logits: bool = False
    binary: bool = False

    @property
    def metric(self) -> str:
        return "accuracy" if self.classification else "mse"


def detect(y: np.ndarray, output_shape: tuple, sample_output: np.ndarray) -> Task:
    """Decide the task from the labels, and logits vs probabilities from real outputs of the model."""
    classification = datasets.is_classification(y, tuple(output_shape[1:]))
    if not classification:
        return Task(classification=False)
    out = sample_output.reshape(len(sample_output), -1)
    binary = out.shape[1] == 1
    if binary:
        probabilities = bool(np.all((out >= 0) & (out <= 1)))
    else:
        probabilities = bool(np.all(out >= 0) and np.allclose(out.sum(axis=1), 1.0, atol=1e-3))
    return Task(classification=True, from_logits=not probabilities, binary=binary)


def loss_for(task: Task, y: np.ndarray):
    """(tf-keras loss, labels in the shape that loss takes) for the task."""
    import tf_keras

    if task.classification and task.binary:
        return (tf_keras.losses.BinaryCrossentropy(from_logits=task.from_logits),
                datasets.labels(y).astype(np.float32).reshape(-1, 1))
    if task.classification:
        return tf_keras.losses.SparseCategoricalCrossentropy(from_logits=task.from_logits), datasets.labels(y)
    return tf_keras.losses.MeanSquaredError(), y


def fit(model, x: dict, y, task: Task, epochs: int, batch_size: int, learning_rate: float, output: str,
        callbacks=()):
    """Compile with the task's loss and a fresh Adam, then train quietly (the Job log stays readable).
    `x`: inputs by name; `y`: the labels of the output named `output` (the only one scored and trained)."""
    import tf_keras

    loss, y = loss_for(task, y)
    if len(model.output_names) > 1:
        loss, y = {output: loss}, {output: y}
    model.compile(optimizer=tf_keras.optimizers.Adam(learning_rate), loss=loss)
    inputs = x[model.input_names[0]] if len(model.input_names) == 1 else x
    model.fit(inputs, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=list(callbacks), shuffle=True)
    return model
