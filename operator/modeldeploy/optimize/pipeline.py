"""The optimizer run: download, load, prune, quantize, export, evaluate, gate, publish, report.

Order matters for safety: the cheap checks (arguments, storage reachable, version not already published,
dataset fits) run before any training, and nothing is written under the output until every gate passed.
This module holds the run around storage (fetch, search, gates, publish); the optimization itself runs the
phases of phases.py, and measure.py computes the figures.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time

from modeldeploy.contracts import report as contract
from modeldeploy.optimize import dataset as datasets
from modeldeploy.optimize import evaluate, loading, phases, report, search
from modeldeploy.optimize.measure import REPORT_NAME, TFLITE_NAME, download_figures, pulled_sizes
from modeldeploy.optimize.options import OptimizeOptions
from modeldeploy.storage import publish, transfer
from modeldeploy.storage.errors import GateFailed, ModelDeployError, NotFound, OptimizationFailed, first_line

log = logging.getLogger(__name__)

SPARSITY_TOLERANCE = 0.01  # tfmot rounds per layer; a point below target is still the target


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


def optimize_model(src: loading.Source, opts: OptimizeOptions, data, work: str) -> tuple[dict, str]:
    """Everything between loading and publishing, phase by phase (phases.py); returns (report, directory to
    publish). Pure of storage."""
    started = time.perf_counter()
    ctx = phases.prepare(src, opts, data, work)
    baseline_dir = phases.export_baseline(ctx)
    exported = phases.export_optimized(ctx, phases.train(ctx))
    measured = phases.measure_all(ctx, baseline_dir, exported)
    extras = phases.side_artefacts(ctx, baseline_dir, exported, measured)
    result = phases.report(ctx, exported, measured, extras)
    result["timings"] = {k: round(v, 2) for k, v in ctx.timings.items()}
    result["seconds"] = round(time.perf_counter() - started, 2)
    if opts.prunes and measured.sparsity < opts.prune_sparsity - SPARSITY_TOLERANCE:
        raise _with_report(OptimizationFailed(
            f"measured sparsity {measured.sparsity:.3f} of the exported weights is below the target "
            f"{opts.prune_sparsity:.3f}; use more --fine-tune-epochs or more training rows so the pruning "
            "schedule can reach it"), result)
    return result, exported.out_dir


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
