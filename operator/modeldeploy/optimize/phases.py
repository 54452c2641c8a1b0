"""The phases of one optimization, in the order pipeline.optimize_model runs them: check, export the float32
baseline, train (prune, quantization-aware training), export the optimized SavedModel (and model.tflite), measure,
add the side artefacts (model.onnx, warmup records, the GPU variant), and assemble the report.

Each phase reads a `Context` and returns what the next ones need, as a small frozen dataclass; none touches storage.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from modeldeploy.optimize import dataset as datasets
from modeldeploy.optimize import (evaluate, export, gpu_variant, graphinfo, loading, onnx_export, prune, quantize,
                                  training, warmup, weights)
from modeldeploy.optimize.measure import BATCH_CURVE, ONNX_NAME, TFLITE_NAME, latency_fields, measure, sample_inputs
from modeldeploy.optimize.options import OptimizeOptions
from modeldeploy.storage.errors import CorruptModel, UnsupportedModel, first_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """What every phase reads: the loaded model, the options, the validation data and what follows from them.
    Frozen, but phases append to `warnings` and add to `timings`, in the order the report lists them."""
    src: loading.Source
    opts: OptimizeOptions
    data: datasets.Dataset | None
    work: str
    specs: list
    sample: dict
    task: training.Task
    output: str         # the scored output key
    threads: int
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Exported:
    """The optimized SavedModel in `out_dir`, the trained graph it was made from, and model.tflite."""
    out_dir: str
    frozen: tuple                   # (graph_def, inputs, outputs) as export.freeze_for_serving gave them
    jit_removed: list[str]
    tflite_path: str | None
    tflite_skipped: str | None


@dataclass(frozen=True)
class Measured:
    """measure.measure's figures of the baseline, the SavedModel and model.tflite (None: not published)."""
    base: dict
    opt: dict
    tfl: dict | None
    tflite_skipped: str | None
    sparsity: float
    weight_count: int


@dataclass(frozen=True)
class Extras:
    """The side artefacts and records added after measuring (None: not asked for)."""
    onnx: dict | None
    warmup_records: int
    gpu_float16: dict | None


@contextmanager
def timed(ctx: Context, key: str):
    """Add the seconds of the block to ctx.timings[key] (not when it raises: the run fails anyway)."""
    t = time.perf_counter()
    yield
    ctx.timings[key] = ctx.timings.get(key, 0.0) + time.perf_counter() - t


def prepare(src: loading.Source, opts: OptimizeOptions, data, work: str) -> Context:
    """The checks that need no training: the dataset fits the model and the model runs on its rows (which also
    tells the task), and the model supports what the options ask for."""
    threads, specs, sample = evaluate.threads(), loading.input_specs(src), sample_inputs(src, data)
    task = training.Task(classification=True)
    output = data.output if data is not None else src.output_keys[0]
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
    return Context(src, opts, data, work, specs, sample, task, output, threads)


def _tensors(src: loading.Source, x: dict) -> dict:
    return {k: tf.constant(v, dtype=src.inputs[k].dtype) for k, v in x.items()}


def export_baseline(ctx: Context) -> str:
    """The source re-exported float32, as the optimized model will be: the reference every figure compares
    against. Returns its directory."""
    with timed(ctx, "export"):
        baseline_dir = os.path.join(ctx.work, "baseline")
        try:
            export.save(*export.freeze(ctx.src.fn, ctx.specs), ctx.specs, baseline_dir)
        except Exception as exc:  # noqa: BLE001 - before any training: what cannot be exported cannot be served
            raise UnsupportedModel(f"the model cannot be exported as a SavedModel for TF Serving (freezing its "
                                   f"variables failed: {first_line(exc)})") from None
    return baseline_dir


def train(ctx: Context):
    """Prune and fine-tune, then quantization-aware training, as the options ask; returns the function to
    export ({input key: tensor} -> {output key: tensor})."""
    src, opts, data = ctx.src, ctx.opts, ctx.data
    model, fn = src.keras, src.fn
    with timed(ctx, "train"):
        if opts.prunes and model is not None:
            model = prune.prune(model, opts.prune_sparsity, opts.fine_tune_epochs, data, ctx.task, opts.batch_size,
                                opts.learning_rate)
            fn = loading.keras_call(model, src.input_keys, src.output_keys)
        elif opts.prunes:  # Keras 3 or a SavedModel: its own variables, pruned in place (fn reads them)
            prune.prune_variables(src.fn, src.variables, src.inputs, opts.prune_sparsity, opts.fine_tune_epochs,
                                  data, ctx.task, opts.batch_size, opts.learning_rate)
        if opts.quantize == "qat":
            model = quantize.quantization_aware_train(
                model, max(1, opts.fine_tune_epochs), data, ctx.task, opts.batch_size, opts.learning_rate,
                pruned=opts.prunes)
            fn = loading.keras_call(model, src.input_keys, src.output_keys)
    return fn


def export_optimized(ctx: Context, fn) -> Exported:
    """The trained function frozen without XLA must-compile, its weights stored as --quantize asks, saved in
    `<work>/out`; and model.tflite beside it for the TFLite modes."""
    with timed(ctx, "export"):
        out_dir = os.path.join(ctx.work, "out")
        graph_def, ins, outs, jit_removed = export.freeze_for_serving(fn, ctx.specs)
        if jit_removed:
            log.warning("removed XLA must-compile (_XlaMustCompile=true, i.e. jit_compile=True) from %d function(s)/"
                        "node(s) (%s): TF Serving runs without XLA unless started with an XLA flag, so the published "
                        "SavedModel runs the same ops as a plain TensorFlow graph", len(jit_removed),
                        ", ".join(jit_removed[:5]) + (", ..." if len(jit_removed) > 5 else ""))
        export.save(weights.compress_weights(graph_def, quantize.STORAGE[ctx.opts.quantize]), ins, outs, ctx.specs,
                    out_dir)
        tflite_path = tflite_skipped = None
        if ctx.opts.quantize in quantize.TFLITE_MODES:
            tflite_path, tflite_skipped = _write_tflite(ctx, (graph_def, ins, outs), out_dir)
    return Exported(out_dir, (graph_def, ins, outs), jit_removed, tflite_path, tflite_skipped)


def _write_tflite(ctx: Context, frozen: tuple, out_dir: str) -> tuple[str | None, str | None]:
    """model.tflite converted from the trained float graph: (its path, None), or (None, why it was skipped)."""
    float_dir = os.path.join(ctx.work, "float")  # the trained graph before weight compression
    export.save(*frozen, ctx.specs, float_dir)
    calibration = ctx.data.calibration() if ctx.data is not None else None
    try:
        tflite = quantize.to_tflite_isolated(float_dir, ctx.opts.quantize, calibration, ctx.specs, ctx.work)
    except RuntimeError as exc:  # a side artefact: the SavedModel is published without it
        skipped = f"the TFLite converter cannot convert this model with builtin ops: {exc}"
        ctx.warnings.append(f"{TFLITE_NAME} skipped: {skipped}")
        log.warning("%s skipped (the SavedModel is published without it): %s", TFLITE_NAME, skipped)
        return None, skipped
    tflite_path = os.path.join(out_dir, TFLITE_NAME)
    with open(tflite_path, "wb") as fh:
        fh.write(tflite)
    return tflite_path, None


def measure_all(ctx: Context, baseline_dir: str, exported: Exported) -> Measured:
    """Size, metric and latency of the baseline, the SavedModel and model.tflite, and the SavedModel's
    sparsity; an export that does not run, or still requires XLA, is never published."""
    data, task, sample, output, out_dir = ctx.data, ctx.task, ctx.sample, ctx.output, exported.out_dir
    with timed(ctx, "evaluate"):
        try:
            base = measure(baseline_dir, evaluate.SavedModelRunner(baseline_dir, output), data, task, sample)
            opt = measure(out_dir, evaluate.SavedModelRunner(out_dir, output), data, task, sample, BATCH_CURVE)
        except Exception as exc:  # noqa: BLE001 - an export that cannot run must not be published
            raise CorruptModel(f"the exported model does not run through serving_default: {first_line(exc)}") \
                from None
        tfl, tflite_path, tflite_skipped = None, exported.tflite_path, exported.tflite_skipped
        if tflite_path:
            try:
                tfl = measure(tflite_path, evaluate.TFLiteRunner(tflite_path, output, ctx.threads), data, task,
                              sample, BATCH_CURVE)
            except Exception as exc:  # noqa: BLE001 - converted but not runnable here: never publish it
                os.remove(tflite_path)
                tflite_skipped = f"the converted model does not run in the TFLite interpreter: {first_line(exc)}"
                ctx.warnings.append(f"{TFLITE_NAME} skipped: {tflite_skipped}")
        sparsity, _, total = graphinfo.weight_sparsity(out_dir)
        left = graphinfo.must_compile(out_dir)
        if left:  # TF Serving (XLA off by default) would load it and fail every request
            raise CorruptModel(f"the exported model still requires XLA (_XlaMustCompile=true on "
                               f"{', '.join(left[:5])})")
    return Measured(base, opt, tfl, tflite_skipped, sparsity, total)


def side_artefacts(ctx: Context, baseline_dir: str, exported: Exported, measured: Measured) -> Extras:
    """model.onnx (--export-onnx), the warmup records and the GPU variant (float16), written into the output
    after measuring: none of them counts in the SavedModel's figures, and none fails the run."""
    data, out_dir, onnx, gpu_float16 = ctx.data, exported.out_dir, None, None
    if ctx.opts.export_onnx:  # for teams that serve elsewhere: a failed conversion is a warning, never a failure
        with timed(ctx, "onnx"):
            onnx = onnx_export.beside(out_dir, baseline_dir, ctx.work, output=ctx.output, threads=ctx.threads,
                                      rows=data.x_val if data is not None else ctx.sample,
                                      classification=ctx.task.classification if data is not None else None,
                                      reference=measured.opt.get("pred"), baseline=measured.base.get("pred"))
        if "skipped" in onnx:
            ctx.warnings.append(f"{ONNX_NAME} skipped: {onnx['skipped']}")
    # After measuring: the records are part of what a pod pulls (download), not of the model's size.
    warmup_records = warmup.write(out_dir, ctx.sample, ctx.specs)
    if ctx.opts.quantize == "float16":
        with timed(ctx, "gpuFloat16"):
            gpu_float16 = gpu_variant.build(exported.frozen, ctx.specs, out_dir, measured.base, measured.opt, data,
                                            ctx.task, ctx.sample, ctx.output, ctx.opts.max_accuracy_drop,
                                            ctx.warnings)
    return Extras(onnx, warmup_records, gpu_float16)


def report(ctx: Context, exported: Exported, measured: Measured, extras: Extras) -> dict:
    """The report's figures of the optimization (timings, download figures and gates are added by the caller)."""
    src, opts, base, opt = ctx.src, ctx.opts, measured.base, measured.opt
    result = {
        "ok": True, "version": opts.version, "quantize": opts.quantize, "sourceKind": src.kind,
        "inputs": {k: {"dtype": s.dtype.name, "shape": [d for d in s.shape]} for k, s in src.inputs.items()},
        "outputs": list(src.outputs), "scoredOutput": ctx.output,
        "sparsityTarget": opts.prune_sparsity, "sparsity": round(measured.sparsity, 4),
        "weightCount": measured.weight_count,
        "weightDtypes": sorted(graphinfo.stored_weight_dtypes(exported.out_dir)),
        "originalBytes": base["bytes"], "optimizedBytes": opt["bytes"],
        "originalCompressedBytes": base["gzipBytes"], "compressedBytes": opt["gzipBytes"],
        "compressionRatio": round(base["gzipBytes"] / opt["gzipBytes"], 3),
        "baselineLatencyMs": base["latencyMsB1"], "optimizedLatencyMs": opt["latencyMsB1"],
        "latency": {"threads": ctx.threads, **latency_fields("baseline", base), **latency_fields("savedModel", opt)},
        "metric": ctx.task.metric,
        # Functions/nodes of the source that required XLA (jit_compile=True): published without it.
        "xlaMustCompileRemoved": len(exported.jit_removed),
        "warmupRecords": extras.warmup_records,
        # Per runtime, [[batch size, p50 ms, p99 ms], ...] in that runtime with the serving pod's threads.
        "batchCurve": {"tensorflow": opt["curve"]},
    }
    if ctx.warnings:
        result["warnings"] = ctx.warnings
    if ctx.data is not None:
        _accuracy(result, ctx, measured)
    _tflite(result, ctx, measured)
    if extras.onnx is not None:
        result["onnx"] = extras.onnx
    if extras.gpu_float16 is not None:
        result["gpuFloat16"] = extras.gpu_float16
    return result


def _accuracy(result: dict, ctx: Context, measured: Measured) -> None:
    base, opt, classification = measured.base, measured.opt, ctx.task.classification
    result.update(baselineAccuracy=round(base["metric"], 6), optimizedAccuracy=round(opt["metric"], 6),
                  accuracyDrop=evaluate.drop(base["metric"], opt["metric"], classification),
                  validationRows=len(ctx.data.y_val))
    if classification:
        result["agreement"] = evaluate.agreement(base["pred"], opt["pred"])


def _tflite(result: dict, ctx: Context, measured: Measured) -> None:
    """model.tflite's figures against the baseline, or why it was skipped."""
    base, tfl = measured.base, measured.tfl
    if tfl is not None:
        result["tflite"] = {"file": TFLITE_NAME, "bytes": tfl["bytes"], "compressedBytes": tfl["gzipBytes"],
                            "compressionRatio": round(base["gzipBytes"] / tfl["gzipBytes"], 3)}
        result["latency"].update(latency_fields("tflite", tfl))
        result["batchCurve"]["tflite"] = tfl["curve"]
        if ctx.data is not None:
            result["tflite"].update(accuracy=round(tfl["metric"], 6),
                                    accuracyDrop=evaluate.drop(base["metric"], tfl["metric"],
                                                               ctx.task.classification))
    elif measured.tflite_skipped:
        result["tflite"] = {"skipped": measured.tflite_skipped}
