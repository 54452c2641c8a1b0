"""What the optimizer Job's measurements decide about serving: the runtime of `spec.serving.runtime: auto`, and
maxBatchSize and batchTimeoutMicros of `spec.serving.batching.auto`. Pure.

Both read status.optimization (its `runtimes`: latency at batch 1 and the batch curve of each artefact that passed
the gates, measured in its runtime with the serving pod's threads), so the choice is the same on every reconcile
of one version and moves only when a new version is published.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from modeldeploy.api.spec import BatchingSpec, ModelDeploymentSpec


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime a version is served with, and why (status.serving.runtimeReason)."""
    name: str
    reason: str


def choose_runtime(spec: ModelDeploymentSpec, record: dict) -> RuntimeChoice:
    """The runtime for the version `record` describes."""
    runtime = spec.serving.runtime
    if runtime != "auto":
        return RuntimeChoice(runtime, f"spec.serving.runtime is {runtime}")
    if spec.serving.gpus > 0:
        return RuntimeChoice("tensorflow", "auto: tensorflow, the only runtime TF Serving runs on a GPU")
    winner = (record.get("search") or {}).get("winner") or {}
    if winner.get("runtime") in (record.get("runtimes") or {}):
        return RuntimeChoice(winner["runtime"], (f"auto: {winner['runtime']}, the artefact that won the search "
                                                 f"(objective {record['search']['objective']})"))
    timed = {name: figures["latencyMs"] for name, figures in (record.get("runtimes") or {}).items()
             if figures.get("latencyMs") is not None}
    if not timed:
        return RuntimeChoice("tensorflow", "auto: tensorflow (the version has no measured artefact to compare)")
    best = min(sorted(timed), key=timed.get)    # sorted: a tie keeps tensorflow
    compared = ", ".join(f"{name} {timed[name]:.3g} ms" for name in sorted(timed))
    threads = record.get("latencyThreads")
    with_threads = f" with {threads} thread{'s' if threads != 1 else ''}" if threads else ""
    return RuntimeChoice(best, (f"auto: {best} measured fastest in the optimizer Job (p50 at batch 1{with_threads}: "
                                f"{compared}); only artefacts that passed the gates are published"))


def choose_batching(curve: list[dict], max_latency_ms: float) -> dict:
    """maxBatchSize and batchTimeoutMicros from a runtime's batch curve ([{batchSize, latencyMs, latencyP99Ms}]).

    A request waits at most batchTimeoutMicros for its batch to fill, then runs with it. The timeout is set to the
    batch's own p50 run time: while one batch runs the next one fills anyway, so waiting longer adds latency and
    little throughput. The worst case of a request is then the timeout plus the batch's p99; among the sizes whose
    worst case fits the budget, the one with the most rows per second wins (the smaller on a tie).
    maxBatchSize 0 means none fits: batching stays off.
    """
    fits = []
    for point in sorted(curve, key=lambda p: p["batchSize"]):
        size, p50, p99 = int(point["batchSize"]), float(point["latencyMs"]), float(point["latencyP99Ms"])
        worst = p50 + p99
        if worst <= max_latency_ms:
            fits.append((round(size * 1000 / max(p50, 1e-9), 1), -size, size, p50, worst))
    measured = "; ".join(f"batch {p['batchSize']}: p50 {p['latencyMs']:.3g} ms, p99 {p['latencyP99Ms']:.3g} ms"
                         for p in curve)
    if not fits:
        return {"maxBatchSize": 0, "batchTimeoutMicros": 0, "maxLatencyMs": int(max_latency_ms),
                "message": f"no measured batch size fits maxLatencyMs {max_latency_ms:g} (timeout + p99): "
                           f"batching is off ({measured})"}
    throughput, _, size, p50, worst = max(fits)
    return {"maxBatchSize": size, "batchTimeoutMicros": max(1, round(p50 * 1000)), "expectedLatencyMs": round(worst, 3),
            "throughput": throughput, "maxLatencyMs": int(max_latency_ms),
            "message": f"batch {size}: {throughput:g} rows/s, worst case {worst:.3g} ms within maxLatencyMs "
                       f"{max_latency_ms:g} ({measured})"}


def serving_batching(spec: ModelDeploymentSpec, record: dict, runtime: str) -> tuple[BatchingSpec | None, dict]:
    """The BatchingSpec TF Serving runs with, and status.serving.batching ({} unless auto chose it)."""
    batching = spec.serving.batching
    if batching is None or not batching.auto:
        return batching, {}
    curve = ((record.get("runtimes") or {}).get(runtime) or {}).get("batchCurve")
    if not curve:   # nothing measured (a version published before batch curves): the spec's values
        return batching, {"maxBatchSize": batching.max_batch_size, "batchTimeoutMicros": batching.batch_timeout_micros,
                          "maxLatencyMs": batching.max_latency_ms,
                          "message": "the serving version has no batch curve (published before batching.auto): "
                                     "the spec's maxBatchSize and batchTimeoutMicros"}
    chosen = choose_batching(curve, batching.max_latency_ms)
    if chosen["maxBatchSize"] == 0:
        return None, chosen
    return dataclasses.replace(batching, max_batch_size=chosen["maxBatchSize"],
                               batch_timeout_micros=chosen["batchTimeoutMicros"]), chosen
