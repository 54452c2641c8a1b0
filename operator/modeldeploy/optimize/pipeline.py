"""The optimizer run: download, load, prune, quantize, export, evaluate, gate, publish, report.

Order matters for safety: the cheap checks (arguments, storage reachable, version not already published,
dataset fits) run before any training, and nothing is written under the output until every gate passed.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time

import numpy as np

from modeldeploy.optimize import dataset as datasets
from modeldeploy.optimize import evaluate, export, graphinfo, loading, quantize, report, training
from modeldeploy.optimize.options import OptimizeOptions
from modeldeploy.storage import publish, transfer
from modeldeploy.storage.errors import (BadArguments, CorruptModel, GateFailed,
                                        ModelDeployError, NotFound, OptimizationFailed)

log = logging.getLogger(__name__)

SPARSITY_TOLERANCE = 0.01  # tfmot rounds per layer; a point below target is still the target
TFLITE_NAME = "model.tflite"
REPORT_NAME = "report.json"
NOT_SAVEDMODEL = (TFLITE_NAME, REPORT_NAME, publish.MARKER)


def _fetch_source(opts: OptimizeOptions, work: str) -> str:
    if not transfer.exists(opts.source):
        raise NotFound(f"--source {opts.source.uri}: nothing stored there")
    local = os.path.join(work, "source", opts.source.name or "model")
    return transfer.download(opts.source, local)


def _fetch_dataset(opts: OptimizeOptions) -> datasets.Dataset | None:
    if opts.dataset is None:
        return None
    if not transfer.exists(opts.dataset):
        raise NotFound(f"--dataset {opts.dataset.uri}: nothing stored there")
    return datasets.from_bytes(transfer.read_bytes(opts.dataset), opts.dataset.uri, need_train=opts.trains)


def _measure(path: str, runner, data, task, sample) -> dict:
    """Size, gzip size, metric and latency of one artefact."""
    out = {"bytes": evaluate.dir_bytes(path, NOT_SAVEDMODEL), "gzipBytes": evaluate.gzip_bytes(path, NOT_SAVEDMODEL),
           "latencyMsB1": evaluate.latency_ms(runner, sample, 1),
           "latencyMsB32": evaluate.latency_ms(runner, sample, 32)}
    if data is not None:
        out["metric"] = evaluate.score(evaluate.predict(runner, data.x_val), data.y_val, task.classification)
    return out


def _sample_inputs(src: loading.Source, data) -> np.ndarray:
    """Inputs for latency runs: validation rows when we have them, else deterministic random ones."""
    if data is not None:
        return data.x_val[:32].astype(src.input_dtype.as_numpy_dtype)
    shape = [32] + [d if d is not None else 1 for d in src.input_shape[1:]]
    return np.random.default_rng(0).random(shape, dtype=np.float32).astype(src.input_dtype.as_numpy_dtype)


def optimize_model(src: loading.Source, opts: OptimizeOptions, data, work: str) -> tuple[dict, str]:
    """Everything between loading and publishing; returns (report, directory to publish). Pure of storage."""
    started = time.perf_counter()
    spec = loading.input_spec(src)
    sample = _sample_inputs(src, data)
    task = training.Task(classification=True)
    if data is not None:
        datasets.check_fits(data, src.input_shape, src.output_shape, opts.dataset.uri if opts.dataset else "")
        try:
            probe = np.asarray(src.fn(sample[:8]))
        except Exception as exc:  # noqa: BLE001
            raise CorruptModel(f"--source: the model fails on dataset rows: {exc}") from None
        task = training.detect(data.y_val, src.output_shape, probe)
    timings = {}

    t = time.perf_counter()
    baseline_dir = os.path.join(work, "baseline")
    export.export(src.fn, spec, src.output_key, baseline_dir, "float32")
    timings["export"] = time.perf_counter() - t

    model, fn = src.keras, src.fn
    if (opts.prunes or opts.quantize == "qat") and model is None:
        raise BadArguments("--prune-sparsity/--quantize qat need a Keras model (.keras, .h5 or a Keras "
                           "SavedModel); this SavedModel has no Keras metadata")
    t = time.perf_counter()
    if opts.prunes:
        from modeldeploy.optimize import prune
        model = prune.prune(model, opts.prune_sparsity, opts.fine_tune_epochs, data, task, opts.batch_size,
                            opts.learning_rate)
        fn = loading.from_keras(model).fn
    if opts.quantize == "qat":
        model = quantize.quantization_aware_train(
            model, max(1, opts.fine_tune_epochs), data.x_train, data.y_train, task, opts.batch_size,
            opts.learning_rate, pruned=opts.prunes)
        fn = loading.from_keras(model).fn
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    out_dir = os.path.join(work, "out")
    graph_def, in_t, out_t, jit_removed = export.freeze_for_serving(fn, spec)
    if jit_removed:
        log.warning("removed XLA must-compile (_XlaMustCompile=true, i.e. jit_compile=True) from %d function(s)/"
                    "node(s) (%s): TF Serving runs without XLA unless started with an XLA flag, so the published "
                    "SavedModel runs the same ops as a plain TensorFlow graph", len(jit_removed),
                    ", ".join(jit_removed[:5]) + (", ..." if len(jit_removed) > 5 else ""))
    export.save(export.compress_weights(graph_def, quantize.STORAGE[opts.quantize]), in_t, out_t, spec,
                src.output_key, out_dir)
    tflite_path = None
    if opts.quantize in quantize.TFLITE_MODES:
        float_dir = os.path.join(work, "float")  # the trained graph before weight compression
        export.save(graph_def, in_t, out_t, spec, src.output_key, float_dir)
        calibration = data.calibration() if data is not None else None
        tflite_path = os.path.join(out_dir, TFLITE_NAME)
        with open(tflite_path, "wb") as fh:
            fh.write(quantize.to_tflite(float_dir, opts.quantize, calibration))
    timings["export"] += time.perf_counter() - t

    t = time.perf_counter()
    try:
        base = _measure(baseline_dir, evaluate.SavedModelRunner(baseline_dir), data, task, sample)
        opt = _measure(out_dir, evaluate.SavedModelRunner(out_dir), data, task, sample)
    except Exception as exc:  # noqa: BLE001 - an export that cannot run must not be published
        raise CorruptModel(f"the exported model does not run through serving_default: {exc}") from None
    tfl = _measure(tflite_path, evaluate.TFLiteRunner(tflite_path), data, task, sample) if tflite_path else None
    sparsity, zeros, total = graphinfo.weight_sparsity(out_dir)
    left = graphinfo.must_compile(out_dir)
    if left:  # TF Serving (XLA off by default) would load it and fail every request
        raise CorruptModel(f"the exported model still requires XLA (_XlaMustCompile=true on {', '.join(left[:5])})")
    timings["evaluate"] = time.perf_counter() - t

    result = {
        "ok": True, "version": opts.version, "quantize": opts.quantize,
        "sparsityTarget": opts.prune_sparsity, "sparsity": round(sparsity, 4), "weightCount": total,
        "weightDtypes": sorted(graphinfo.stored_weight_dtypes(out_dir)),
        "originalBytes": base["bytes"], "optimizedBytes": opt["bytes"],
        "originalCompressedBytes": base["gzipBytes"], "compressedBytes": opt["gzipBytes"],
        "compressionRatio": round(base["gzipBytes"] / opt["gzipBytes"], 3),
        "baselineLatencyMs": base["latencyMsB1"], "optimizedLatencyMs": opt["latencyMsB1"],
        "latency": {"baselineB1": base["latencyMsB1"], "baselineB32": base["latencyMsB32"],
                    "savedModelB1": opt["latencyMsB1"], "savedModelB32": opt["latencyMsB32"]},
        "metric": task.metric,
        # Functions/nodes of the source that required XLA (jit_compile=True): published without it.
        "xlaMustCompileRemoved": len(jit_removed),
    }
    if data is not None:
        result.update(baselineAccuracy=round(base["metric"], 6), optimizedAccuracy=round(opt["metric"], 6),
                      accuracyDrop=evaluate.drop(base["metric"], opt["metric"], task.classification),
                      validationRows=len(data.x_val))
    if tfl is not None:
        result["tflite"] = {"file": TFLITE_NAME, "bytes": tfl["bytes"], "compressedBytes": tfl["gzipBytes"],
                            "compressionRatio": round(base["gzipBytes"] / tfl["gzipBytes"], 3)}
        result["latency"].update(tfliteB1=tfl["latencyMsB1"], tfliteB32=tfl["latencyMsB32"])
        if data is not None:
            result["tflite"].update(accuracy=round(tfl["metric"], 6),
                                    accuracyDrop=evaluate.drop(base["metric"], tfl["metric"], task.classification))
    result["timings"] = {k: round(v, 2) for k, v in timings.items()}
    result["seconds"] = round(time.perf_counter() - started, 2)

    if opts.prunes and sparsity < opts.prune_sparsity - SPARSITY_TOLERANCE:
        raise _with_report(OptimizationFailed(
            f"measured sparsity {sparsity:.3f} of the exported weights is below the target "
            f"{opts.prune_sparsity:.3f}; use more --fine-tune-epochs or more training rows so the pruning "
            "schedule can reach it"), result)
    return result, out_dir


def _with_report(exc: ModelDeployError, result: dict) -> ModelDeployError:
    exc.report = dict(result, ok=False)
    return exc


def run(opts: OptimizeOptions) -> dict:
    """The whole `modeldeploy optimize` run; returns the report of the published version."""
    started = time.perf_counter()
    # Fail fast, before downloading or training: unreachable storage, bad credentials, existing version.
    publish.check_not_published(opts.output, opts.version, opts.overwrite)
    with tempfile.TemporaryDirectory(prefix="modeldeploy-") as work:
        src = loading.load(_fetch_source(opts, work), opts.allow_unsafe_model_formats)
        data = _fetch_dataset(opts)
        result, out_dir = optimize_model(src, opts, data, work)
        target = publish.version_location(opts.output, opts.version)
        result.update(source=opts.source.uri, uri=target.uri, output=opts.output.uri)
        result["gates"] = {"maxAccuracyDrop": opts.max_accuracy_drop, "minCompression": opts.min_compression}
        failures = report.gate_failures(result, opts.max_accuracy_drop, opts.min_compression)
        if failures:
            result["gates"]["failures"] = failures
            if opts.report_path:
                report.write_json(dict(result, ok=False), opts.report_path)
            raise _with_report(GateFailed("; ".join(failures) + "; nothing was published"), result)
        result["seconds"] = round(time.perf_counter() - started, 2)
        report.write_json(result, os.path.join(out_dir, REPORT_NAME))
        publish.publish(out_dir, opts.output, opts.version, overwrite=opts.overwrite, writer=opts.writer)
    if opts.report_path:
        report.write_json(result, opts.report_path)
    report.write_termination_message(result, opts.termination_message_path)
    log.info("published %s: compression %.2fx, accuracy drop %s, sparsity %.3f", result["uri"],
             result["compressionRatio"], result.get("accuracyDrop"), result["sparsity"])
    return result


