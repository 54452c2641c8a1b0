"""Measure an artefact: predictions and accuracy/MSE on the validation split, size, gzip size, CPU latency.

SavedModels are loaded with `tf.saved_model.load` and run through `serving_default`, as TF Serving would;
.tflite files run in the TFLite interpreter. Latency is the median wall time of repeated calls after a
warm-up, bounded in count and time so a large model cannot stall a Job.
"""
from __future__ import annotations

import gzip
import os
import time

import numpy as np
import tensorflow as tf

from modeldeploy.optimize import dataset as datasets

LATENCY_RUNS = int(os.environ.get("MODELDEPLOY_LATENCY_RUNS", "100"))
LATENCY_BUDGET_S = float(os.environ.get("MODELDEPLOY_LATENCY_BUDGET_S", "3"))


def dir_bytes(path: str, exclude: tuple[str, ...] = ()) -> int:
    """Total size of the files under `path` (or of one file), skipping top-level names in `exclude`."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(p) for p in files(path, exclude))


def gzip_bytes(path: str, exclude: tuple[str, ...] = ()) -> int:
    """Sum of each file's gzip (level 9) size: what storage and a download of the artefact cost."""
    paths = [path] if os.path.isfile(path) else files(path, exclude)
    total = 0
    for p in paths:
        with open(p, "rb") as fh:
            total += len(gzip.compress(fh.read(), compresslevel=9, mtime=0))
    return total


def files(path: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """Every file under a directory (paths, sorted), skipping top-level names in `exclude`."""
    out = []
    for root, dirs, names in os.walk(path):
        if root == path:
            dirs[:] = [d for d in dirs if d not in exclude]
            names = [n for n in names if n not in exclude]
        out.extend(os.path.join(root, n) for n in sorted(names))
    return sorted(out)


class SavedModelRunner:
    """`serving_default` of a SavedModel on disk, called like TF Serving does (named inputs); returns the
    output `output` (default: the first in key order)."""

    def __init__(self, path: str, output: str | None = None):
        self.loaded = tf.saved_model.load(path)
        self.fn = self.loaded.signatures["serving_default"]
        _, kwargs = self.fn.structured_input_signature
        self.dtypes = {k: spec.dtype for k, spec in kwargs.items()}
        self.output_key = output or sorted(self.fn.structured_outputs)[0]

    def __call__(self, x: dict) -> np.ndarray:
        out = self.fn(**{k: tf.constant(v, dtype=self.dtypes[k]) for k, v in x.items()})
        return out[self.output_key].numpy()


class TFLiteRunner:
    """A .tflite model through its serving_default signature runner (named inputs and outputs, as the
    SavedModel's); inputs are resized to each batch they see."""

    def __init__(self, path: str, output: str | None = None, threads: int | None = None):
        self.interpreter = tf.lite.Interpreter(model_path=path, num_threads=threads or os.cpu_count() or 1)
        signatures = self.interpreter.get_signature_list()
        name = "serving_default" if "serving_default" in signatures else next(iter(signatures))
        self.runner = self.interpreter.get_signature_runner(name)
        details = self.runner.get_input_details()
        self.dtypes = {k: d["dtype"] for k, d in details.items()}
        self.output_key = output if output in signatures[name]["outputs"] else sorted(signatures[name]["outputs"])[0]

    def __call__(self, x: dict) -> np.ndarray:
        out = self.runner(**{k: np.asarray(v).astype(self.dtypes[k]) for k, v in x.items()})
        return np.asarray(out[self.output_key]).copy()


def predict(runner, x: dict, batch: int = 256) -> np.ndarray:
    """Predictions for all rows, in batches."""
    n = datasets.rows(x)
    return np.concatenate([runner(datasets.take(x, slice(i, i + batch))) for i in range(0, n, batch)], axis=0)


def classes(pred: np.ndarray) -> np.ndarray:
    """A classifier's answer per row: argmax, or > 0.5 for one sigmoid output."""
    flat = pred.reshape(len(pred), -1)
    return (flat[:, 0] > 0.5).astype(np.int64) if flat.shape[1] == 1 else flat.argmax(axis=1)


def score(pred: np.ndarray, y: np.ndarray, classification: bool) -> float:
    """Accuracy (classifiers) or mean squared error (regressors)."""
    if classification:
        return float(np.mean(classes(pred) == datasets.labels(y)))
    return float(np.mean((pred.reshape(y.shape).astype(np.float64) - y.astype(np.float64)) ** 2))


def agreement(baseline: np.ndarray, optimized: np.ndarray) -> float:
    """Share of rows where two classifiers give the same answer: what an untrained or unlabelled model is
    judged by, and how far the optimized model strays from the original beyond the accuracy figure."""
    return round(float(np.mean(classes(baseline) == classes(optimized))), 6)


def drop(baseline: float, optimized: float, classification: bool) -> float:
    """Accuracy points lost (classifiers) or relative MSE increase (regressors); negative means better."""
    if classification:
        return round(baseline - optimized, 6)
    return round((optimized - baseline) / max(baseline, 1e-12), 6)


def set_threads(threads: int | None) -> None:
    """Run TensorFlow with `threads` intra- and inter-op threads, as TF Serving runs with the pod's CPUs
    (`--tensorflow_intra_op_parallelism`), so latency is measured as the serving pod will see it. Only before
    TensorFlow starts running ops; later (an earlier run in this process) its pools stay as they are."""
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            pass


def threads() -> int:
    """TensorFlow's intra-op threads in force (the machine's cores when TensorFlow chooses)."""
    return tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1


def latency(runner, sample: dict, batch: int) -> dict:
    """p50 and p99 milliseconds per call at `batch` rows, after two warm-up calls."""
    n = datasets.rows(sample)
    x = datasets.take(sample, np.arange(batch) % n)
    for _ in range(2):
        runner(x)
    times, started = [], time.perf_counter()
    while len(times) < LATENCY_RUNS and (time.perf_counter() - started < LATENCY_BUDGET_S or len(times) < 5):
        t0 = time.perf_counter()
        runner(x)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000
    return {"p50": round(float(np.percentile(ms, 50)), 4), "p99": round(float(np.percentile(ms, 99)), 4)}
