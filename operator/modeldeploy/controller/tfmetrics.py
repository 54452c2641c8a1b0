"""TF Serving's Prometheus text reduced to one model's request figures: pure parsing and counter arithmetic.

TF Serving (tensorflow_serving/servables/tensorflow/util.cc, rendered by util/prometheus_exporter.cc, names
sanitized so every '/' becomes ':') publishes per model:

- `:tensorflow:serving:request_count{model_name, status}`: a counter per TF status code name (OK, INTERNAL, ...),
  printed without a `_total` suffix;
- `:tensorflow:serving:request_latency{model_name, API, entrypoint[, status]}`: a histogram of request wall time
  in microseconds, buckets Exponential(10, 1.8, 33), as cumulative `_bucket{..., le="..."}` lines.

Recent TF Serving releases label request_latency with `status` as well; the local stand-in (hack/tfserving)
does not. Both read the same here: every series of the model is summed, whatever its other labels.

Interface:
- `parse(text, model_name) -> Counts`: one scrape of one pod (a model without requests yet has no series: zeros).
- `increase(prev, cur) -> Counts`: what happened between two scrapes of one pod; a counter that went down, or a
  series that vanished, means the process restarted, and then everything in `cur` is new (Prometheus' rule).
- `Counts + Counts`: summed over pods or steps. `quantile(q, buckets)`: Prometheus' histogram_quantile.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Mapping

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY_BUCKET = ":tensorflow:serving:request_latency_bucket"
# Codes that say the request was wrong, not the server: they count as requests, never as errors, so a client
# sending malformed inputs cannot make a healthy version look broken. Everything else but OK is an error
# (INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, NOT_FOUND of the served model...).
CLIENT_CODES = frozenset({"INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE", "CANCELLED"})
OK = "OK"

_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


@dataclass(frozen=True)
class Counts:
    """One model's request figures: per status code the requests, and the latency histogram as ascending
    (upper bound in microseconds, cumulative count) pairs, +Inf last. Cumulative totals in a scrape; increases
    once `increase` has been applied."""
    statuses: Mapping[str, float] = field(default_factory=dict)
    buckets: tuple = ()

    @property
    def requests(self) -> float:
        return sum(self.statuses.values())

    @property
    def errors(self) -> float:
        return sum(v for code, v in self.statuses.items() if code != OK and code not in CLIENT_CODES)

    def __add__(self, other: "Counts") -> "Counts":
        statuses = dict(self.statuses)
        for code, value in other.statuses.items():
            statuses[code] = statuses.get(code, 0.0) + value
        return Counts(statuses, _add_buckets(self.buckets, other.buckets))


def _cumulative_at(buckets: tuple, bound: float) -> float:
    """A cumulative histogram read at `bound`: the count of its largest bound <= `bound` (0 below the first)."""
    out = 0.0
    for le, count in buckets:
        if le > bound:
            break
        out = count
    return out


def _add_buckets(a: tuple, b: tuple) -> tuple:
    """Sum two cumulative histograms. Equal bounds (one TF Serving release) add bucket by bucket; a bound only
    one side has reads the other at its next lower bound, which keeps the sum cumulative."""
    if not a or not b:
        return a or b
    bounds = sorted({le for le, _ in a} | {le for le, _ in b})
    return tuple((le, _cumulative_at(a, le) + _cumulative_at(b, le)) for le in bounds)


def _labels(text: str) -> dict[str, str] | None:
    out, pos = {}, 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        if not m:
            return None if text[pos:].strip() else out
        out[m.group(1)] = re.sub(r'\\[\\"n]', lambda e: _UNESCAPE[e.group(0)], m.group(2))
        pos = m.end()
    return out


def _sample(line: str) -> tuple[str, dict, float] | None:
    """(name, labels, value) of one exposition line, None for anything unreadable (it is skipped)."""
    name, brace, rest = line.partition("{")
    if brace:
        labels_text, close, rest = rest.rpartition("}")
        labels = _labels(labels_text) if close else None
        if labels is None:
            return None
    else:
        name, _, rest = line.partition(" ")
        labels = {}
    parts = rest.split()
    if not parts:
        return None
    try:
        value = float(parts[0])
    except ValueError:
        return None
    return name.strip(), labels, value


def parse(text: str, model_name: str) -> Counts:
    """The request figures of `model_name` in one scrape, summed over every other label."""
    statuses: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        # Cheap prefix test first: a TF Serving scrape carries hundreds of lines of other metrics.
        if not line.startswith(":tensorflow:serving:request_"):
            continue
        sample = _sample(line)
        if sample is None or sample[1].get("model_name") != model_name or not math.isfinite(sample[2]):
            continue
        name, labels, value = sample
        if name == REQUEST_COUNT:
            code = labels.get("status", "")
            statuses[code] = statuses.get(code, 0.0) + value
        elif name == REQUEST_LATENCY_BUCKET and "le" in labels:
            try:
                le = float(labels["le"])
            except ValueError:
                continue
            buckets[le] = buckets.get(le, 0.0) + value
    return Counts(statuses, tuple(sorted(buckets.items())))


def increase(prev: Counts | None, cur: Counts, restarted: bool = False) -> Counts:
    """What happened between two scrapes of one pod. With no earlier scrape nothing is known (zeros): the first
    scrape of a pod only sets its baseline. `restarted` (the container's restart count moved) or any counter
    that went down or vanished means the process started again from zero: then all of `cur` is new."""
    if prev is None:
        return Counts()
    if restarted or _went_down(prev, cur):
        return cur
    statuses = {code: value - prev.statuses.get(code, 0.0) for code, value in cur.statuses.items()}
    buckets = tuple((le, count - _cumulative_at(prev.buckets, le)) for le, count in cur.buckets)
    return Counts(statuses, buckets)


def _went_down(prev: Counts, cur: Counts) -> bool:
    if any(cur.statuses.get(code, -1.0) < value for code, value in prev.statuses.items()):
        return True
    now = dict(cur.buckets)
    return any(now.get(le, -1.0) < count for le, count in prev.buckets)


def quantile(q: float, buckets: tuple) -> float | None:
    """Prometheus' histogram_quantile on cumulative (upper bound, count) pairs: linear interpolation within the
    bucket that holds rank q * total, the first bucket starting at 0, and the upper bound of the last finite
    bucket when the rank falls in +Inf. None without observations."""
    if not buckets or not 0 <= q <= 1:
        return None
    bounds = [le for le, _ in buckets]
    counts, running = [], 0.0
    for _, count in buckets:
        running = max(running, count)       # increases of a restarted pod can be a little non-monotonic
        counts.append(running)
    if bounds[-1] != math.inf:                # TF always exports +Inf; without it there is no total
        return None
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    i = next((i for i, c in enumerate(counts[:-1]) if c >= rank), len(counts) - 1)
    if i == len(counts) - 1:
        return bounds[-2] if len(bounds) >= 2 else None
    if i == 0 and bounds[0] <= 0:
        return bounds[0]
    start = 0.0 if i == 0 else bounds[i - 1]
    below = 0.0 if i == 0 else counts[i - 1]
    inside = counts[i] - below
    if inside <= 0:
        return bounds[i]
    return start + (bounds[i] - start) * (rank - below) / inside
