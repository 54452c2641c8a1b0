"""Prometheus metrics of the operator (prometheus_client, on a registry of our own).

Interface (stable, see /work/notes/OBS.md):

- `observe_reconcile(seconds, error)` or `with reconcile_timer(): ...`; `observe_optimization(seconds)`.
- Per model: `set_model_figures(namespace, name, compression_ratio, accuracy_drop)`,
  `set_serving_version(...)`, `set_health(namespace, name, state)`, `inc_rollback(...)`,
  `set_slo(namespace, name, verdict)`, `inc_slo_violation(...)`,
  `observe_model(body)` (all of the above from a ModelDeployment with its status), `forget_model(...)` on delete.
- `health_state(body) -> (state, message)`: the same rules as the Argo CD health check
  (manifests/argocd/health-modeldeployment.lua); a unit test keeps both in agreement.
- `start_metrics_server(port, addr)`; `REGISTRY` for tests and for `generate_latest`.

Metric updates never raise: a bad figure is logged and skipped, because an exception here would fail a
reconcile for the sake of a number on a dashboard.
"""
from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

log = logging.getLogger(__name__)

# A registry of our own: tests can read exact values, and importing another library that registers
# metrics on the default registry never clutters or breaks our endpoint.
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)     # RSS, CPU, fds: the operator's own footprint (issue 5's RSS target)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

HEALTHY, PROGRESSING, DEGRADED, SUSPENDED, UNKNOWN = "Healthy", "Progressing", "Degraded", "Suspended", "Unknown"
HEALTH_STATES = (HEALTHY, PROGRESSING, DEGRADED, SUSPENDED, UNKNOWN)
RESULT_SUCCESS, RESULT_ERROR = "success", "error"

_MODEL = ("namespace", "name")

RECONCILE_TOTAL = Counter("modeldeploy_reconcile", "Reconciles of ModelDeployments, by result.",
                          ["result"], registry=REGISTRY)
RECONCILE_ERRORS = Counter("modeldeploy_reconcile_errors", "Reconciles that ended in an exception "
                           "(including temporary errors that Kopf retries).", registry=REGISTRY)
# A reconcile is a handful of API calls: milliseconds to a few seconds.
RECONCILE_DURATION = Histogram("modeldeploy_reconcile_duration_seconds", "Duration of one reconcile.",
                               buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                               registry=REGISTRY)
# An optimization Job trains and evaluates: tens of seconds to hours.
OPTIMIZATION_DURATION = Histogram("modeldeploy_optimization_duration_seconds",
                                  "Duration of finished optimization Jobs (start to completion).",
                                  buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400),
                                  registry=REGISTRY)
COMPRESSION_RATIO = Gauge("modeldeploy_model_compression_ratio",
                          "status.optimization.compressionRatio of the serving version.", _MODEL, registry=REGISTRY)
ACCURACY_DROP = Gauge("modeldeploy_model_accuracy_drop",
                      "status.optimization.accuracyDrop of the serving version (baseline - optimized).",
                      _MODEL, registry=REGISTRY)
SERVING_VERSION = Gauge("modeldeploy_model_serving_version", "status.model.servingVersion.", _MODEL,
                        registry=REGISTRY)
HEALTH = Gauge("modeldeploy_model_health", "1 for the model's current health state, 0 for the others.",
               _MODEL + ("state",), registry=REGISTRY)
ROLLBACKS = Counter("modeldeploy_rollbacks", "Automatic rollbacks to status.model.lastGoodVersion.", _MODEL,
                    registry=REGISTRY)

SLO_VIOLATED = Gauge("modeldeploy_model_slo_violated",
                     "1 while the serving version violates spec.monitoring.slo (status.serving.metrics.slo is "
                     "Violated), 0 while it is Met or there is no verdict; absent without an SLO.", _MODEL,
                     registry=REGISTRY)
SLO_VIOLATIONS = Counter("modeldeploy_slo_violations", "Transitions of a model's SLO verdict to Violated.",
                         _MODEL, registry=REGISTRY)

_per_model = (COMPRESSION_RATIO, ACCURACY_DROP, SERVING_VERSION, ROLLBACKS, SLO_VIOLATED, SLO_VIOLATIONS)
_lock = threading.Lock()
_last_reconcile: float | None = None     # monotonic time of the last finished reconcile (for the probes)


def _number(value, what: str) -> float | None:
    """A finite float, or None (logged) for anything else."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        log.warning("metrics: ignoring non-numeric %s %r", what, value)
        return None
    if not math.isfinite(out):
        log.warning("metrics: ignoring non-finite %s %r", what, value)
        return None
    return out


def observe_reconcile(seconds: float, error: bool) -> None:
    """Count one reconcile and record its duration."""
    global _last_reconcile
    RECONCILE_TOTAL.labels(result=RESULT_ERROR if error else RESULT_SUCCESS).inc()
    if error:
        RECONCILE_ERRORS.inc()
    secs = _number(seconds, "reconcile duration")
    if secs is not None and secs >= 0:
        RECONCILE_DURATION.observe(secs)
    _last_reconcile = time.monotonic()


@contextlib.contextmanager
def reconcile_timer() -> Iterator[None]:
    """Time the block as one reconcile; any exception (re-raised) counts as an error."""
    start = time.perf_counter()
    error = True
    try:
        yield
        error = False
    finally:
        observe_reconcile(time.perf_counter() - start, error)


def seconds_since_last_reconcile() -> float | None:
    """Seconds since the last finished reconcile, None before the first one."""
    return None if _last_reconcile is None else time.monotonic() - _last_reconcile


def observe_optimization(seconds: float) -> None:
    """Record the duration of one finished optimization Job."""
    secs = _number(seconds, "optimization duration")
    if secs is not None and secs >= 0:
        OPTIMIZATION_DURATION.observe(secs)


def set_model_figures(namespace: str, name: str, compression_ratio=None, accuracy_drop=None) -> None:
    """Set the compression ratio and accuracy drop gauges; None leaves a figure as it is."""
    ratio = _number(compression_ratio, "compression ratio")
    drop = _number(accuracy_drop, "accuracy drop")
    if ratio is not None:
        COMPRESSION_RATIO.labels(namespace, name).set(ratio)
    if drop is not None:
        ACCURACY_DROP.labels(namespace, name).set(drop)


def set_serving_version(namespace: str, name: str, version) -> None:
    """Set the serving version gauge (None: nothing serves yet, the series is left as it is)."""
    value = _number(version, "serving version")
    if value is not None:
        SERVING_VERSION.labels(namespace, name).set(value)


def set_health(namespace: str, name: str, state: str) -> None:
    """Set model_health: 1 for `state`, 0 for every other state (so a query can sum or filter by state)."""
    if state not in HEALTH_STATES:
        log.warning("metrics: unknown health state %r for %s/%s, recording Unknown", state, namespace, name)
        state = UNKNOWN
    with _lock:    # both writes together: a scrape never sees two states at 1
        for s in HEALTH_STATES:
            HEALTH.labels(namespace, name, s).set(1 if s == state else 0)


def inc_rollback(namespace: str, name: str) -> None:
    """Count one automatic rollback."""
    ROLLBACKS.labels(namespace, name).inc()


def set_slo(namespace: str, name: str, verdict: str | None) -> None:
    """model_slo_violated from status.serving.metrics.slo; None (no SLO, or not judged yet) drops the series."""
    if verdict is None:
        with contextlib.suppress(KeyError):
            SLO_VIOLATED.remove(namespace, name)
        return
    SLO_VIOLATED.labels(namespace, name).set(1 if verdict == "Violated" else 0)


def inc_slo_violation(namespace: str, name: str) -> None:
    """Count one transition of the SLO verdict to Violated."""
    SLO_VIOLATIONS.labels(namespace, name).inc()


def forget_model(namespace: str, name: str) -> None:
    """Drop every per-model series (the ModelDeployment was deleted)."""
    with _lock:
        for metric in _per_model:
            with contextlib.suppress(KeyError):
                metric.remove(namespace, name)
        for s in HEALTH_STATES:
            with contextlib.suppress(KeyError):
                HEALTH.remove(namespace, name, s)


def _true(conditions: list, type_: str) -> dict | None:
    for c in conditions:
        if isinstance(c, dict) and c.get("type") == type_ and c.get("status") == "True":
            return c
    return None


def _describe(c: dict) -> str:
    reason, message = c.get("reason") or "", c.get("message") or ""
    return f"{reason}: {message}" if reason and message else reason or message


def health_state(body: dict) -> tuple[str, str]:
    """Health of a ModelDeployment from its own status: the rules of the Argo CD Lua health check.

    No status (or no conditions) and an observedGeneration behind metadata.generation are Progressing (the
    operator has not caught up: never report Healthy on a stale status). Then Stalled=True or Degraded=True is
    Degraded, Reconciling=True is Progressing, Ready=True is Healthy (Suspended when scaled to zero), and
    anything else is Progressing.
    """
    status = body.get("status") or {}
    conditions = status.get("conditions") or []
    if not conditions:
        return PROGRESSING, "Waiting for the modeldeploy operator to report status"
    generation = (body.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed != generation:
        return PROGRESSING, (f"Waiting for the operator to observe generation {generation} "
                             f"(observed {observed if observed is not None else 'none'})")
    for type_ in ("Stalled", "Degraded"):
        c = _true(conditions, type_)
        if c is not None:
            return DEGRADED, _describe(c)
    c = _true(conditions, "Reconciling")
    if c is not None:
        return PROGRESSING, _describe(c)
    c = _true(conditions, "Ready")
    if c is not None:
        return (SUSPENDED if c.get("reason") == "ScaledToZero" else HEALTHY), _describe(c)
    ready = next((c for c in conditions if isinstance(c, dict) and c.get("type") == "Ready"), None)
    return PROGRESSING, _describe(ready) if ready else "Waiting for the Ready condition"


def observe_model(body: dict) -> None:
    """Set every per-model gauge from a ModelDeployment and its (new) status. Never raises."""
    try:
        meta = body.get("metadata") or {}
        namespace, name = meta.get("namespace") or "", meta.get("name") or ""
        status = body.get("status") or {}
        opt = status.get("optimization") or {}
        set_model_figures(namespace, name, opt.get("compressionRatio"), opt.get("accuracyDrop"))
        set_serving_version(namespace, name, (status.get("model") or {}).get("servingVersion"))
        set_health(namespace, name, health_state(body)[0])
        set_slo(namespace, name, ((status.get("serving") or {}).get("metrics") or {}).get("slo"))
    except Exception:     # a malformed body must not fail the reconcile that reports it
        log.exception("metrics: could not record the figures of a ModelDeployment")


def start_metrics_server(port: int = 8080, addr: str = "0.0.0.0"):
    """Serve REGISTRY over HTTP (every path, /metrics included) in a daemon thread; returns (server, thread).

    port 0 binds a free port: read it back from `server.server_port`.
    """
    server, thread = start_http_server(port, addr=addr, registry=REGISTRY)
    log.info("serving Prometheus metrics on http://%s:%d/metrics", addr, server.server_port)
    return server, thread
