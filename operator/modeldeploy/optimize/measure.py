"""The figures of an exported artefact: size, gzip size, metric and latency, and what a serving pod downloads.

Sizes count the SavedModel's own files only (NOT_SAVEDMODEL lists the others a version directory holds); the
download figures count what `modeldeploy pull` copies for each runtime, against the model as the user stored it.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from modeldeploy.optimize import dataset as datasets
from modeldeploy.optimize import evaluate, loading
from modeldeploy.storage import publish

TFLITE_NAME = publish.TFLITE_NAME
ONNX_NAME = publish.ONNX_NAME
REPORT_NAME = publish.REPORT_NAME
GPU_FLOAT16 = publish.GPU_DIR.rstrip("/")   # the float16-compute SavedModel for GPU pods (half.py)
NOT_SAVEDMODEL = (TFLITE_NAME, ONNX_NAME, REPORT_NAME, publish.MARKER, GPU_FLOAT16)
BATCH = 32   # the batched latency and throughput figures
# Batch sizes whose latency is measured on each artefact that may serve: spec.serving.batching.auto chooses
# TF Serving's max_batch_size among them.
BATCH_CURVE = (1, 2, 4, 8, 16, 32, 64)


def measure(path: str, runner, data, task, sample, sizes=(1, BATCH)) -> dict:
    """Size, gzip size, metric, and latency (p50, p99) at each batch size in `sizes` (1 and BATCH among them):
    `curve` is [[batch size, p50 ms, p99 ms], ...], from which batching.auto chooses; throughput at BATCH."""
    curve = [[b, lat["p50"], lat["p99"]] for b in sizes for lat in [evaluate.latency(runner, sample, b)]]
    b1, b32 = curve[sizes.index(1)], curve[sizes.index(BATCH)]
    out = {"bytes": evaluate.dir_bytes(path, NOT_SAVEDMODEL), "gzipBytes": evaluate.gzip_bytes(path, NOT_SAVEDMODEL),
           "latencyMsB1": b1[1], "latencyMsB1P99": b1[2], "latencyMsB32": b32[1],
           "throughputB32": round(BATCH * 1000 / max(b32[1], 1e-9), 1), "curve": curve}
    if data is not None:
        out["pred"] = evaluate.predict(runner, data.x_val)
        out["metric"] = evaluate.score(out["pred"], data.y_val, task.classification)
    return out


def latency_fields(prefix: str, measured: dict) -> dict:
    """An artefact's latency figures under the report's names (baselineB1, baselineB1P99, ...)."""
    return {f"{prefix}B1": measured["latencyMsB1"], f"{prefix}B1P99": measured["latencyMsB1P99"],
            f"{prefix}B32": measured["latencyMsB32"], f"{prefix}ThroughputB32": measured["throughputB32"]}


def sample_inputs(src: loading.Source, data) -> dict[str, np.ndarray]:
    """Inputs for latency runs: validation rows when we have them, else deterministic ones of each input's
    shape and dtype (random floats, zero ids, empty strings)."""
    if data is not None:
        return datasets.take(data.x_val, slice(0, 32))
    rng, out = np.random.default_rng(0), {}
    for key, spec in src.inputs.items():
        shape = [32] + [d if d is not None else 1 for d in spec.shape[1:]]
        if spec.dtype == tf.string:
            out[key] = np.full(shape, "")
        elif spec.dtype.is_floating:
            out[key] = rng.random(shape, dtype=np.float32).astype(spec.dtype.as_numpy_dtype)
        else:
            out[key] = np.zeros(shape, dtype=spec.dtype.as_numpy_dtype)
    return out


def download_figures(source_path: str, version_dir: str) -> dict:
    """What a serving pod downloads, before and after: bytes and gzip bytes of the model as the user stored it,
    and of the files `modeldeploy pull --runtime R` copies for each runtime the version can be served with
    (`tensorflow-gpu`: `--accelerator gpu`, when the version has the float16-compute SavedModel)."""
    before = evaluate.gzip_bytes(source_path)
    files = [os.path.relpath(p, version_dir).replace(os.sep, "/") for p in evaluate.files(version_dir)]
    pulls = [("tensorflow", "tensorflow", False)]
    if TFLITE_NAME in files:
        pulls.append(("tflite", "tflite", False))
    if any(f.startswith(publish.GPU_DIR) for f in files):
        pulls.append(("tensorflow-gpu", "tensorflow", True))
    runtimes = {}
    for key, runtime, gpu in pulls:
        paths = [os.path.join(version_dir, rel) for rel in publish.runtime_files(files, runtime, gpu)]
        after = sum(evaluate.gzip_bytes(p) for p in paths)
        runtimes[key] = {"bytes": sum(os.path.getsize(p) for p in paths), "compressedBytes": after,
                         "ratio": round(before / after, 3)}
    return {"sourceBytes": evaluate.dir_bytes(source_path), "sourceCompressedBytes": before, "runtimes": runtimes}


def pulled_sizes(result: dict) -> None:
    """Make the report's sizes those of what a serving pod pulls, against the model as the user stored it
    (in place): `compressionRatio` is sourceCompressedBytes over the gzip bytes of the tensorflow runtime's
    files, and model.tflite's the same for the tflite runtime. The SavedModel against the float32 re-export
    (the weights' own compression, without warmup records) stays as `exportCompressionRatio`."""
    download = result["download"]
    result["exportCompressionRatio"] = result["compressionRatio"]
    result.update(originalBytes=download["sourceBytes"], originalCompressedBytes=download["sourceCompressedBytes"])
    for name, figures in (("tensorflow", result), ("tflite", result.get("tflite"))):
        pulled = download["runtimes"].get(name)
        if pulled is None or figures is None or "skipped" in figures:
            continue
        figures.update(compressedBytes=pulled["compressedBytes"], compressionRatio=pulled["ratio"],
                       **{"optimizedBytes" if name == "tensorflow" else "bytes": pulled["bytes"]})
