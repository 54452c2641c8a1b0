"""TF monitoring metrics rendered the way tensorflow_serving/util/prometheus_exporter.cc does.

Names are TF's (/tensorflow/serving/request_count ...) sanitized like GetPrometheusMetricName: every character
outside [a-zA-Z0-9_] becomes ':' (so ':tensorflow:serving:request_count'). Counters print without a `_total`
suffix and histograms as NAME_bucket{...,le="..."} / NAME_sum / NAME_count, only '# TYPE' lines - which is why
this is rendered here instead of by prometheus_client (its exposition would rename counters to *_total).
"""
from __future__ import annotations

import re
import threading


def prometheus_name(tf_name: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9_]", ":", tf_name)
    return "_" + name if name[:1].isdigit() else name


def _label_name(name: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9]", "_", name)
    return "_" + name if name[:1].isdigit() else name


def _label_value(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"')


def exponential_buckets(scale: float, growth: float, count: int) -> list[float]:
    """monitoring::Buckets::Exponential: count limits scale*growth^i, then DBL_MAX (+Inf)."""
    return [scale * growth ** i for i in range(count)] + [float("inf")]


def _num(x: float) -> str:
    # absl::StrCat(double): six significant digits.
    return "%g" % x


class _Metric:
    def __init__(self, registry, tf_name: str, help_: str, labels: tuple[str, ...]):
        self.name, self.help, self.labels = tf_name, help_, labels
        self.cells: dict[tuple, object] = {}
        self.lock = registry.lock
        registry.metrics.append(self)

    def _key(self, values) -> tuple:
        assert len(values) == len(self.labels), (self.name, values)
        return tuple(str(v) for v in values)

    def _labels(self, key, extra: str = "") -> str:
        parts = [f'{_label_name(n)}="{_label_value(v)}"' for n, v in zip(self.labels, key)]
        if extra:
            parts.append(extra)
        return "{" + ",".join(parts) + "}"


class Counter(_Metric):
    kind = "counter"

    def inc(self, *labels, by: int = 1):
        key = self._key(labels)
        with self.lock:
            self.cells[key] = self.cells.get(key, 0) + by

    def value(self, *labels) -> int:
        with self.lock:
            return self.cells.get(self._key(labels), 0)

    def render(self) -> list[str]:
        name = prometheus_name(self.name)
        out = [f"# TYPE {name} counter"]
        out += [f"{name}{self._labels(k)} {v}" for k, v in sorted(self.cells.items())]
        return out


class Gauge(Counter):
    kind = "gauge"

    def set(self, value, *labels):
        with self.lock:
            self.cells[self._key(labels)] = value

    def render(self) -> list[str]:
        lines = super().render()
        lines[0] = lines[0].replace(" counter", " gauge")
        return lines


class Histogram(_Metric):
    """monitoring::Sampler: a histogram with fixed bucket limits (a value v falls in the first limit > v)."""

    def __init__(self, registry, tf_name, help_, labels, limits: list[float], inclusive: bool = False):
        super().__init__(registry, tf_name, help_, labels)
        self.limits = limits
        self.inclusive = inclusive          # True: value <= limit (used for the integer batch-size buckets)

    def observe(self, value: float, *labels):
        key = self._key(labels)
        with self.lock:
            cell = self.cells.setdefault(key, {"buckets": [0] * len(self.limits), "sum": 0.0})
            for i, limit in enumerate(self.limits):
                if value < limit or (self.inclusive and value == limit) or i == len(self.limits) - 1:
                    cell["buckets"][i] += 1
                    break
            cell["sum"] += value

    def count(self, *labels) -> int:
        with self.lock:
            cell = self.cells.get(self._key(labels))
            return sum(cell["buckets"]) if cell else 0

    def render(self) -> list[str]:
        name = prometheus_name(self.name)
        out = [f"# TYPE {name} histogram"]
        for key, cell in sorted(self.cells.items()):
            total = 0
            for i, n in enumerate(cell["buckets"]):
                total += n
                le = "+Inf" if i == len(self.limits) - 1 else _num(self.limits[i])
                le_label = 'le="%s"' % le
                out.append(f"{name}_bucket{self._labels(key, le_label)} {total}")
            out.append(f"{name}_sum{self._labels(key)} {_num(cell['sum'])}")
            out.append(f"{name}_count{self._labels(key)} {total}")
        return out


class Registry:
    def __init__(self):
        self.lock = threading.RLock()
        self.metrics: list[_Metric] = []

    def render(self) -> str:
        lines: list[str] = []
        with self.lock:
            for m in sorted(self.metrics, key=lambda m: m.name):
                if m.cells:           # TF exports only metrics with collected points
                    lines += m.render()
        return "\n".join(lines) + "\n"


REGISTRY = Registry()
_LATENCY = exponential_buckets(10, 1.8, 33)

# tensorflow_serving/servables/tensorflow/util.cc
request_count = Counter(REGISTRY, "/tensorflow/serving/request_count", "The total number of requests.",
                        ("model_name", "status"))
# request_latency carries the status code name too, as RecordRequestLatency does in recent releases.
request_latency = Histogram(REGISTRY, "/tensorflow/serving/request_latency",
                            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
                            ("model_name", "API", "entrypoint", "status"), _LATENCY)
runtime_latency = Histogram(REGISTRY, "/tensorflow/serving/runtime_latency",
                            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
                            ("model_name", "API", "runtime"), _LATENCY)
# tensorflow_serving/servables/tensorflow/saved_model_warmup_util.cc
model_warmup_latency = Histogram(REGISTRY, "/tensorflow/serving/model_warmup_latency",
                                 "Distribution of wall time (in microseconds) for warming up the model.",
                                 ("model_path", "status"), _LATENCY)
# tensorflow/cc/saved_model/loader.cc
load_attempt_count = Counter(REGISTRY, "/tensorflow/cc/saved_model/load_attempt_count",
                             "The number of times a SavedModel was successfully loaded.", ("model_path", "status"))
# tensorflow_serving/batching/batching_session.cc (+ batching_util): queuing latency, wrapped runs, batch sizes.
# TF records the three batch-size metrics as percentile samplers; the stand-in exports them as histograms
# bucketed by batch size so a scrape can show the batch-size distribution.
_SIZES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024, float("inf")]
queuing_latency = Histogram(REGISTRY, "/tensorflow/serving/batching_session/queuing_latency",
                            "Distribution of wall time spent (in microseconds) in queuing", ("thread_pool_name",),
                            exponential_buckets(100, 1.2, 52))
wrapped_run_count = Counter(REGISTRY, "/tensorflow/serving/batching_session/wrapped_run_count",
                            "Total count of run calls on the wrapped session", ())
input_batch_size = Histogram(REGISTRY, "/tensorflow/serving/batching_session/input_batch_size",
                             "Tracks the batch size distribution on the inputs.", (), _SIZES, True)
processed_batch_size = Histogram(REGISTRY, "/tensorflow/serving/batching_session/processed_batch_size",
                                 "Tracks the batch size distribution on processing.", (), _SIZES, True)
padding_size = Histogram(REGISTRY, "/tensorflow/serving/batching_session/padding_size",
                         "Tracks the padding size distribution on batches.", ("execution_batch_size",),
                         [0] + _SIZES, True)
