"""The optimizer run: download, load, prune, quantize, export, evaluate, gate, publish, report.

Order matters for safety: the cheap checks (arguments, storage reachable, version not already published,
dataset fits) run before any training, and nothing is written under the output until every gate passed.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time

import numpy as np
import tensorflow as tf

from modeldeploy.contracts import report as contract
from modeldeploy.optimize import dataset as datasets
from modeldeploy.optimize import (evaluate, export, graphinfo, half, loading, onnx_export, prune, quantize,
                                  report, search, training, warmup)
from modeldeploy.optimize.options import OptimizeOptions
from modeldeploy.storage import publish, transfer
from modeldeploy.storage.errors import (CorruptModel, GateFailed, ModelDeployError, NotFound,
                                        OptimizationFailed, UnsupportedModel, first_line)

log = logging.getLogger(__name__)

SPARSITY_TOLERANCE = 0.01  # tfmot rounds per layer; a point below target is still the target
TFLITE_NAME = publish.TFLITE_NAME
ONNX_NAME = publish.ONNX_NAME
REPORT_NAME = publish.REPORT_NAME
GPU_FLOAT16 = publish.GPU_DIR.rstrip("/")   # the float16-compute SavedModel for GPU pods (half.py)
NOT_SAVEDMODEL = (TFLITE_NAME, ONNX_NAME, REPORT_NAME, publish.MARKER, GPU_FLOAT16)
BATCH = 32   # the batched latency and throughput figures
# Batch sizes whose latency is measured on each artefact that may serve: spec.serving.batching.auto chooses
# TF Serving's max_batch_size among them.
BATCH_CURVE = (1, 2, 4, 8, 16, 32, 64)


def _fetch_source(opts: OptimizeOptions, work: str) -> str:
    if not transfer.exists(opts.source):
        raise NotFound(f"--source {opts.source.uri}: nothing stored there")
    local = os.path.join(work, "source", opts.source.name or "model")
    return transfer.download(opts.source, local)


def _fetch_dataset(opts: OptimizeOptions, src: loading.Source) -> datasets.Dataset | None:
    if opts.dataset is None:
        return None
    if not transfer.exists(opts.dataset):
        raise NotFound(f"--dataset {opts.dataset.uri}: nothing stored there")
    return datasets.from_bytes(transfer.read_bytes(opts.dataset), opts.dataset.uri, opts.trains,
                               src.input_keys, src.output_keys)


def _measure(path: str, runner, data, task, sample, sizes=(1, BATCH)) -> dict:
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


def _gate_tflite(result: dict, out_dir: str, opts: OptimizeOptions) -> None:
    """model.tflite must pass the gates too, or it is not published: the SavedModel still is (and serves with
    runtime tensorflow); runtime auto never picks an artefact that failed them."""
    failures = report.gate_failures(result, opts.max_accuracy_drop, opts.min_compression, artefact="tflite")
    if not failures:
        return
    os.remove(os.path.join(out_dir, TFLITE_NAME))
    result["download"]["runtimes"].pop("tflite", None)
    result["batchCurve"].pop("tflite", None)
    result["tflite"] = {"skipped": "failed the gates: " + "; ".join(failures)}
    result.setdefault("warnings", []).append(f"{TFLITE_NAME} skipped: {result['tflite']['skipped']}")
    log.warning("%s not published: %s", TFLITE_NAME, result["tflite"]["skipped"])


def _sample_inputs(src: loading.Source, data) -> dict[str, np.ndarray]:
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


def _tensors(src: loading.Source, x: dict) -> dict:
    return {k: tf.constant(v, dtype=src.inputs[k].dtype) for k, v in x.items()}


def optimize_model(src: loading.Source, opts: OptimizeOptions, data, work: str) -> tuple[dict, str]:
    """Everything between loading and publishing; returns (report, directory to publish). Pure of storage."""
    started = time.perf_counter()
    threads = evaluate.threads()
    specs = loading.input_specs(src)
    sample = _sample_inputs(src, data)
    task = training.Task(classification=True)
    output = data.output if data is not None else src.output_keys[0]
    warnings: list[str] = []
    if data is not None:
        datasets.check_fits(data, src.inputs, src.outputs[output], opts.dataset.uri if opts.dataset else "")
        try:
            probe = np.asarray(src.fn(_tensors(src, datasets.take(sample, slice(0, 8))))[output])
        except Exception as exc:  # noqa: BLE001
            raise CorruptModel(f"--source: the model fails on dataset rows: {first_line(exc)}") from None
        task = training.detect(data.y_val, src.outputs[output], probe)
    if opts.quantize == "qat" and src.keras is None:
        raise UnsupportedModel(f"--quantize qat: quantization-aware training needs a tf-keras model "
                               f"(tensorflow-model-optimization), and this is a {src.kind} model; use "
                               "--quantize int8 (post-training, calibrated), which needs no training")
    if opts.prunes and src.keras is None and not prune.prunable(src.variables):
        raise UnsupportedModel(prune.NOTHING_TO_PRUNE)
    timings = {}

    t = time.perf_counter()
    baseline_dir = os.path.join(work, "baseline")
    try:
        export.export(src.fn, specs, baseline_dir, "float32")
    except Exception as exc:  # noqa: BLE001 - before any training: what cannot be exported cannot be served
        raise UnsupportedModel(f"the model cannot be exported as a SavedModel for TF Serving (freezing its "
                               f"variables failed: {first_line(exc)})") from None
    timings["export"] = time.perf_counter() - t

    model, fn = src.keras, src.fn
    t = time.perf_counter()
    if opts.prunes and model is not None:
        model = prune.prune(model, opts.prune_sparsity, opts.fine_tune_epochs, data, task, opts.batch_size,
                            opts.learning_rate)
        fn = loading.keras_call(model, src.input_keys, src.output_keys)
    elif opts.prunes:  # Keras 3 or a SavedModel: its own variables, pruned in place (fn reads them)
        prune.prune_variables(src.fn, src.variables, src.inputs, opts.prune_sparsity, opts.fine_tune_epochs, data,
                              task, opts.batch_size, opts.learning_rate)
    if opts.quantize == "qat":
        model = quantize.quantization_aware_train(
            model, max(1, opts.fine_tune_epochs), data, task, opts.batch_size, opts.learning_rate,
            pruned=opts.prunes)
        fn = loading.keras_call(model, src.input_keys, src.output_keys)
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    out_dir = os.path.join(work, "out")
    graph_def, ins, outs, jit_removed = export.freeze_for_serving(fn, specs)
    if jit_removed:
        log.warning("removed XLA must-compile (_XlaMustCompile=true, i.e. jit_compile=True) from %d function(s)/"
                    "node(s) (%s): TF Serving runs without XLA unless started with an XLA flag, so the published "
                    "SavedModel runs the same ops as a plain TensorFlow graph", len(jit_removed),
                    ", ".join(jit_removed[:5]) + (", ..." if len(jit_removed) > 5 else ""))
    export.save(export.compress_weights(graph_def, quantize.STORAGE[opts.quantize]), ins, outs, specs, out_dir)
    tflite_path = tflite_skipped = None
    if opts.quantize in quantize.TFLITE_MODES:
        float_dir = os.path.join(work, "float")  # the trained graph before weight compression
        export.save(graph_def, ins, outs, specs, float_dir)
        calibration = data.calibration() if data is not None else None
        try:
            tflite = quantize.to_tflite_isolated(float_dir, opts.quantize, calibration, specs, work)
        except RuntimeError as exc:  # a side artefact: the SavedModel is published without it
            tflite_skipped = f"the TFLite converter cannot convert this model with builtin ops: {exc}"
            warnings.append(f"{TFLITE_NAME} skipped: {tflite_skipped}")
            log.warning("%s skipped (the SavedModel is published without it): %s", TFLITE_NAME, tflite_skipped)
        else:
            tflite_path = os.path.join(out_dir, TFLITE_NAME)
            with open(tflite_path, "wb") as fh:
                fh.write(tflite)
    timings["export"] += time.perf_counter() - t

    t = time.perf_counter()
    try:
        base = _measure(baseline_dir, evaluate.SavedModelRunner(baseline_dir, output), data, task, sample)
        opt = _measure(out_dir, evaluate.SavedModelRunner(out_dir, output), data, task, sample, BATCH_CURVE)
    except Exception as exc:  # noqa: BLE001 - an export that cannot run must not be published
        raise CorruptModel(f"the exported model does not run through serving_default: {first_line(exc)}") from None
    tfl = None
    if tflite_path:
        try:
            tfl = _measure(tflite_path, evaluate.TFLiteRunner(tflite_path, output, threads), data, task, sample,
                           BATCH_CURVE)
        except Exception as exc:  # noqa: BLE001 - converted but not runnable here: never publish it
            os.remove(tflite_path)
            tflite_path, tflite_skipped = None, f"the converted model does not run in the TFLite interpreter: " \
                                                f"{first_line(exc)}"
            warnings.append(f"{TFLITE_NAME} skipped: {tflite_skipped}")
    sparsity, zeros, total = graphinfo.weight_sparsity(out_dir)
    left = graphinfo.must_compile(out_dir)
    if left:  # TF Serving (XLA off by default) would load it and fail every request
        raise CorruptModel(f"the exported model still requires XLA (_XlaMustCompile=true on {', '.join(left[:5])})")
    timings["evaluate"] = time.perf_counter() - t
    onnx = None
    if opts.export_onnx:  # for teams that serve elsewhere: a failed conversion is a warning, never a failed publish
        t = time.perf_counter()
        onnx = onnx_export.beside(out_dir, baseline_dir, work, output=output, threads=threads,
                                  rows=data.x_val if data is not None else sample,
                                  classification=task.classification if data is not None else None,
                                  reference=opt.get("pred"), baseline=base.get("pred"))
        timings["onnx"] = time.perf_counter() - t
        if "skipped" in onnx:
            warnings.append(f"{ONNX_NAME} skipped: {onnx['skipped']}")
    # After measuring: the records are part of what a pod pulls (download), not of the model's size.
    warmup_records = warmup.write(out_dir, sample, specs)
    gpu_float16 = None
    if opts.quantize == "float16":
        t = time.perf_counter()
        gpu_float16 = _gpu_float16((graph_def, ins, outs), specs, out_dir, base, opt, data, task, sample, output,
                                   opts.max_accuracy_drop, warnings)
        timings["gpuFloat16"] = time.perf_counter() - t

    result = {
        "ok": True, "version": opts.version, "quantize": opts.quantize, "sourceKind": src.kind,
        "inputs": {k: {"dtype": s.dtype.name, "shape": [d for d in s.shape]} for k, s in src.inputs.items()},
        "outputs": list(src.outputs), "scoredOutput": output,
        "sparsityTarget": opts.prune_sparsity, "sparsity": round(sparsity, 4), "weightCount": total,
        "weightDtypes": sorted(graphinfo.stored_weight_dtypes(out_dir)),
        "originalBytes": base["bytes"], "optimizedBytes": opt["bytes"],
        "originalCompressedBytes": base["gzipBytes"], "compressedBytes": opt["gzipBytes"],
        "compressionRatio": round(base["gzipBytes"] / opt["gzipBytes"], 3),
        "baselineLatencyMs": base["latencyMsB1"], "optimizedLatencyMs": opt["latencyMsB1"],
        "latency": {"threads": threads, **_latency("baseline", base), **_latency("savedModel", opt)},
        "metric": task.metric,
        # Functions/nodes of the source that required XLA (jit_compile=True): published without it.
        "xlaMustCompileRemoved": len(jit_removed),
        "warmupRecords": warmup_records,
        # Per runtime, [[batch size, p50 ms, p99 ms], ...] in that runtime with the serving pod's threads.
        "batchCurve": {"tensorflow": opt["curve"]},
    }
    if warnings:
        result["warnings"] = warnings
    if data is not None:
        result.update(baselineAccuracy=round(base["metric"], 6), optimizedAccuracy=round(opt["metric"], 6),
                      accuracyDrop=evaluate.drop(base["metric"], opt["metric"], task.classification),
                      validationRows=len(data.y_val))
        if task.classification:
            result["agreement"] = evaluate.agreement(base["pred"], opt["pred"])
    if tfl is not None:
        result["tflite"] = {"file": TFLITE_NAME, "bytes": tfl["bytes"], "compressedBytes": tfl["gzipBytes"],
                            "compressionRatio": round(base["gzipBytes"] / tfl["gzipBytes"], 3)}
        result["latency"].update(_latency("tflite", tfl))
        result["batchCurve"]["tflite"] = tfl["curve"]
        if data is not None:
            result["tflite"].update(accuracy=round(tfl["metric"], 6),
                                    accuracyDrop=evaluate.drop(base["metric"], tfl["metric"], task.classification))
    elif tflite_skipped:
        result["tflite"] = {"skipped": tflite_skipped}
    if onnx is not None:
        result["onnx"] = onnx
    if gpu_float16 is not None:
        result["gpuFloat16"] = gpu_float16
    result["timings"] = {k: round(v, 2) for k, v in timings.items()}
    result["seconds"] = round(time.perf_counter() - started, 2)

    if opts.prunes and sparsity < opts.prune_sparsity - SPARSITY_TOLERANCE:
        raise _with_report(OptimizationFailed(
            f"measured sparsity {sparsity:.3f} of the exported weights is below the target "
            f"{opts.prune_sparsity:.3f}; use more --fine-tune-epochs or more training rows so the pruning "
            "schedule can reach it"), result)
    return result, out_dir


def _gpu_float16(frozen: tuple, specs, out_dir: str, base: dict, opt: dict, data, task, sample, output: str,
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


def _latency(prefix: str, measured: dict) -> dict:
    """An artefact's latency figures under the report's names (baselineB1, baselineB1P99, ...)."""
    return {f"{prefix}B1": measured["latencyMsB1"], f"{prefix}B1P99": measured["latencyMsB1P99"],
            f"{prefix}B32": measured["latencyMsB32"], f"{prefix}ThroughputB32": measured["throughputB32"]}


def _with_report(exc: ModelDeployError, result: dict) -> ModelDeployError:
    exc.report = dict(result, ok=False)
    return exc


def _candidate(src: loading.Source, opts: OptimizeOptions, data, source_path: str, work: str) -> tuple[dict, str,
                                                                                                 dict[str, str]]:
    """One optimization measured as a pod would pull it and gated: (report, directory, failed SavedModel gates
    as {gate: why})."""
    os.makedirs(work, exist_ok=True)
    result, out_dir = optimize_model(src, opts, data, work)
    result["download"] = download_figures(source_path, out_dir)
    pulled_sizes(result)
    target = publish.version_location(opts.output, opts.version)
    result.update(source=opts.source.uri, uri=target.uri, output=opts.output.uri)
    result["gates"] = {contract.GATE_MAX_ACCURACY_DROP: opts.max_accuracy_drop,
                       contract.GATE_MIN_COMPRESSION: opts.min_compression}
    _gate_tflite(result, out_dir, opts)
    return result, out_dir, report.failed_gates(result, opts.max_accuracy_drop, opts.min_compression)


def _search(src: loading.Source, opts: OptimizeOptions, data, source_path: str, work: str) -> tuple[dict, str]:
    """Every candidate of --search-* within the time budget; the best passing one by the objective, with the
    whole table in its report (`search`, `searchCandidates`). No candidate passing is a failed gate; no
    candidate even measured re-raises the first one's error."""
    started, table, measured, first_error = time.perf_counter(), [], {}, None
    for i, cand in enumerate(opts.candidates()):
        label = {"sparsity": cand.prune_sparsity, "mode": cand.quantize}
        if i and time.perf_counter() - started > opts.search.budget_seconds:
            table += search.rows(label, None, [], f"not tried: the time budget of {opts.search.budget_seconds} s "
                                                  f"was spent")
            continue
        try:
            # A fresh copy per candidate: pruning a SavedModel's variables changes them in place.
            fresh = src if i == 0 else loading.load(source_path, opts.allow_unsafe_model_formats)
            result, out_dir, failures = _candidate(fresh, cand, data, source_path, os.path.join(work, f"cand-{i}"))
        except ModelDeployError as exc:
            first_error = first_error or exc
            table += search.rows(label, None, [], f"failed: {type(exc).__name__}: {first_line(exc)}")
            log.warning("search candidate %s failed: %s", label, first_line(exc))
            continue
        measured[(cand.prune_sparsity, cand.quantize)] = (result, out_dir)
        table += search.rows(label, result, list(failures.values()))
        log.info("search candidate %s: %s", label, [(r["runtime"], r.get("compressedBytes"), r.get("latencyMs"))
                                                    for r in table[-2:]])
    winner = search.choose(table, opts.search.objective)
    if winner is None:
        if not measured and first_error is not None:
            raise first_error
        result = dict(next(iter(measured.values()))[0]) if measured else {}
        result["searchCandidates"] = table
        raise _with_report(GateFailed(f"no search candidate passed the gates ({len(table)} rows in "
                                      f"searchCandidates); nothing was published"), result)
    result, out_dir = measured[(winner["sparsity"], winner["mode"])]
    result["search"] = search.summary(table, winner, opts.search.objective, opts.search.budget_seconds)
    result["searchCandidates"] = table
    return result, out_dir


def run(opts: OptimizeOptions) -> dict:
    """The whole `modeldeploy optimize` run; returns the report of the published version."""
    started = time.perf_counter()
    evaluate.set_threads(opts.serving_threads)
    # Fail fast, before downloading or training: unreachable storage, bad credentials, existing version.
    publish.check_not_published(opts.output, opts.version, opts.overwrite, opts.source.uri)
    with tempfile.TemporaryDirectory(prefix="modeldeploy-") as work:
        source_path = _fetch_source(opts, work)
        src = loading.load(source_path, opts.allow_unsafe_model_formats)
        data = _fetch_dataset(opts, src)
        if opts.search is not None:
            result, out_dir = _search(src, opts, data, source_path, work)
        else:
            result, out_dir, failures = _candidate(src, opts, data, source_path, work)
            if failures:
                result["gates"]["failures"] = list(failures.values())
                raise _with_report(GateFailed("; ".join(failures.values()) + "; nothing was published",
                                              gates=list(failures)), result)
        result["seconds"] = round(time.perf_counter() - started, 2)
        report.write_json(result, os.path.join(out_dir, REPORT_NAME))
        publish.publish(out_dir, opts.output, opts.version, overwrite=opts.overwrite, writer=opts.writer,
                        source=opts.source.uri)
    if opts.report_path:
        report.write_json(result, opts.report_path)
    report.write_termination_message(result, opts.termination_message_path)
    log.info("published %s: compression %.2fx, accuracy drop %s, sparsity %.3f", result["uri"],
             result["compressionRatio"], result.get("accuracyDrop"), result["sparsity"])
    return result
