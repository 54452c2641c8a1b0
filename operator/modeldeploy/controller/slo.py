"""Service-level objectives from TF Serving's metrics: windows of scrapes, figures, a verdict that cannot flap,
and the status block. Pure: the clock and the scrapes are passed in (controller/scrape.py does the I/O).

- `Window`: one object's memory. `observe(now, samples, window_seconds)` takes this pass's scrape of each ready
  pod (pod uid -> (restart count, tfmetrics.Counts)), keeps the last one per pod, adds one step (the increases
  since each pod's previous scrape, summed over pods) and returns the `Figures` over the steps in the window.
- `judge(slo, figures) -> (verdict, what failed)`: Met, Violated, or NoVerdict below minRequestsPerSecond.
- `settle(raw, previous, since, now, window)`: hysteresis. The published verdict takes the raw one only when
  the last change is at least a window old, so it never flips faster than the window allows.
- `evaluate(slo, figures, previous block, version, now) -> (block, transition)`: the new status.serving.metrics,
  which is the previous block unchanged unless a figure moved materially (`MATERIAL`) or the verdict changed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from modeldeploy.api.spec import SLOSpec
from modeldeploy.api.status import seconds_between
from modeldeploy.controller import tfmetrics

MET, VIOLATED, NO_VERDICT = "Met", "Violated", "NoVerdict"
# "Materially": a figure moved by more than 10% of its last written value AND by more than a floor that is
# noise at any load (so 0.01 -> 0.02 requests/s on an idle model is no write). A verdict, version or pod-count
# change is always material.
MATERIAL = 0.10
FLOORS = {"requestsPerSecond": 0.1, "p50Ms": 1.0, "p99Ms": 1.0, "errorRatio": 0.001}


@dataclass(frozen=True)
class Figures:
    """One object's serving figures over a window, summed over the pods that answered."""
    requests_per_second: float
    error_ratio: float
    p50_ms: float | None            # None without requests
    p99_ms: float | None
    window_seconds: float           # what the steps really cover
    pods: int                       # pods whose scrape this pass was read
    requests: float = 0.0
    version: int | None = None      # the serving version measured (set by the I/O side)


@dataclass
class Window:
    """The last scrape per pod and the steps within the window (one per pass that read at least one pod)."""
    last: dict = field(default_factory=dict)        # pod uid -> (restarts, Counts)
    steps: list = field(default_factory=list)       # (start, end, Counts), oldest first
    last_pass: float | None = None                  # when a pass last read a pod (monotonic seconds)

    def observe(self, now: float, samples: dict, window_seconds: float, alive: set | None = None) \
            -> Figures | None:
        """Add this pass; the figures over the window, or None before the first step (nothing to compare).

        `alive`: the uids of the pods that still exist; the last scrape of any other pod is forgotten. A pod
        that exists but whose scrape failed keeps its last one, so its next increase covers both intervals and
        nothing is lost from the window.
        """
        if alive is not None:
            self.last = {uid: v for uid, v in self.last.items() if uid in alive}
        if not samples:              # every scrape failed: no data, not zero traffic
            return None
        step = tfmetrics.Counts()
        for uid, (restarts, counts) in samples.items():
            prev = self.last.get(uid)
            step = step + tfmetrics.increase(prev[1] if prev else None, counts,
                                             restarted=prev is not None and prev[0] != restarts)
        self.last.update(samples)
        if self.last_pass is not None:
            self.steps.append((self.last_pass, now, step))
        self.last_pass = now
        # A step belongs to the window when its middle does: the covered span stays near windowSeconds
        # whatever the jitter of the monitor's schedule.
        self.steps = [s for s in self.steps if (s[0] + s[1]) / 2 >= now - window_seconds]
        if not self.steps:
            return None
        return figures(self.steps, now, len(samples))


def figures(steps: list, now: float, pods: int) -> Figures:
    """Sum the steps: requests per second over the covered span, error ratio, p50 and p99 (ms)."""
    total = tfmetrics.Counts()
    for _, _, counts in steps:
        total = total + counts
    span = max(now - steps[0][0], 1e-9)
    requests = total.requests
    p50, p99 = (tfmetrics.quantile(q, total.buckets) for q in (0.5, 0.99))
    return Figures(requests_per_second=requests / span, error_ratio=total.errors / requests if requests else 0.0,
                   p50_ms=None if p50 is None else p50 / 1000, p99_ms=None if p99 is None else p99 / 1000,
                   window_seconds=span, pods=pods, requests=requests)


def judge(slo: SLOSpec, f: Figures) -> tuple[str, list[str]]:
    """(verdict, the bounds it broke in words). NoVerdict below the minimum rate or without requests."""
    if f.requests <= 0 or f.requests_per_second < slo.min_requests_per_second:
        return NO_VERDICT, []
    broken = []
    if slo.max_p99_latency_ms is not None and f.p99_ms is not None and f.p99_ms > slo.max_p99_latency_ms:
        broken.append(f"p99 {f.p99_ms:.1f} ms > {slo.max_p99_latency_ms} ms")
    if slo.max_error_ratio is not None and f.error_ratio > slo.max_error_ratio:
        broken.append(f"error ratio {f.error_ratio:.4f} > {slo.max_error_ratio:g}")
    return (VIOLATED if broken else MET), broken


def settle(raw: str, previous: str | None, since: str | None, now: str, window_seconds: float) -> tuple[str, str]:
    """(verdict, since): the raw verdict once the previous one has stood for a whole window; the first verdict
    at once (there is nothing to flap from)."""
    if previous is None or since is None:
        return raw, now
    if raw == previous:
        return previous, since
    try:
        held = seconds_between(since, now)
    except ValueError:          # an unreadable time in status: start counting again
        return previous, now
    return (raw, now) if held >= window_seconds else (previous, since)


def _moved(old, new, floor: float) -> bool:
    if old is None or new is None:
        return (old is None) != (new is None)
    return abs(new - old) > max(MATERIAL * abs(old), floor)


def material(old: dict, new: dict) -> bool:
    """Whether `new` must replace the written block `old` (see MATERIAL)."""
    if not old:
        return True
    if any(old.get(k) != new.get(k) for k in ("slo", "version", "pods")):
        return True
    return any(_moved(old.get(k), new.get(k), floor) for k, floor in FLOORS.items())


def message(slo: SLOSpec, f: Figures, verdict: str, broken: list[str], held: str = "") -> str:
    """The figures against the bounds, for status and the Degraded condition; `held` says why the verdict
    stands although the figures say otherwise (the hysteresis)."""
    bounds = [b for b in (f"p99 <= {slo.max_p99_latency_ms} ms" if slo.max_p99_latency_ms is not None else "",
                          f"error ratio <= {slo.max_error_ratio:g}" if slo.max_error_ratio is not None else "")
              if b]
    seen = (f"{f.requests_per_second:.2f} requests/s, error ratio {f.error_ratio:.4f}, p50 "
            f"{_ms(f.p50_ms)}, p99 {_ms(f.p99_ms)} over {f.window_seconds:.0f} s on {f.pods} pod(s)")
    objective = f"SLO {', '.join(bounds)}" if bounds else "no SLO bound set"
    held = f"; {held}" if held else ""
    if verdict == VIOLATED:
        what = "; ".join(broken) or "the figures are back within the bounds"
        return f"SLO violated on version {f.version}: {what} ({seen}; {objective}){held}"
    if verdict == NO_VERDICT:
        return (f"no SLO verdict on version {f.version}: below {slo.min_requests_per_second:g} requests/s "
                f"({seen}; {objective}){held}")
    return f"SLO met on version {f.version}: {seen} ({objective}){held}"


def _ms(value) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def block(slo: SLOSpec, f: Figures, verdict: str, since: str, broken: list[str], now: str, held: str = "") -> dict:
    """status.serving.metrics for these figures (rounded: status is for reading, not for arithmetic)."""
    out = {"version": f.version, "requestsPerSecond": round(f.requests_per_second, 3),
           "errorRatio": round(f.error_ratio, 5), "windowSeconds": round(f.window_seconds, 1), "pods": f.pods,
           "slo": verdict, "sloTransitionTime": since, "measureTime": now,
           "message": message(slo, f, verdict, broken, held)}
    for key, value in (("p50Ms", f.p50_ms), ("p99Ms", f.p99_ms)):
        if value is not None:
            out[key] = round(value, 2)
    return out


def evaluate(slo: SLOSpec, f: Figures | None, previous: dict | None, version: int, now: str) \
        -> tuple[dict | None, tuple[str | None, str] | None]:
    """The new status.serving.metrics and the verdict transition (old, new), if any.

    Figures of another version are ignored, and a block written for another version is dropped: a new
    version's verdict starts afresh. Without figures (not measured this pass) the previous block stays as it is.
    """
    previous = previous if previous and previous.get("version") == version else None
    if f is None or f.version != version:
        return previous, None
    old = (previous or {}).get("slo")
    raw, broken = judge(slo, f)
    verdict, since = settle(raw, old, (previous or {}).get("sloTransitionTime"), now, slo.window_seconds)
    held = ""
    if verdict != raw:       # the hysteresis holds the verdict: say what the figures say and until when
        held = (f"the figures say {raw}{': ' + '; '.join(broken) if broken else ''}, but the verdict changes at "
                f"most once per {slo.window_seconds} s window (it last changed at {since})")
        broken = []
    new = block(slo, f, verdict, since, broken, now, held)
    transition = (old, verdict) if old != verdict else None
    return (new if material(previous or {}, new) else previous), transition
