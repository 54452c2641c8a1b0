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


def fit(model, x, y, task: Task, epochs: int, batch_size: int, learning_rate: float, callbacks=()):
    """Compile with the task's loss and a fresh Adam, then train quietly (the Job log stays readable)."""
    import tf_keras

    if task.classification and task.binary:
        loss = tf_keras.losses.BinaryCrossentropy(from_logits=task.from_logits)
        y = datasets.labels(y).astype(np.float32).reshape(-1, 1)
    elif task.classification:
        loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=task.from_logits)
        y = datasets.labels(y)
    else:
        loss = tf_keras.losses.MeanSquaredError()
    model.compile(optimizer=tf_keras.optimizers.Adam(learning_rate), loss=loss)
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=list(callbacks), shuffle=True)
    return model
