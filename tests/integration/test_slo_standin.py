"""SLO figures from real scrapes, no cluster: two TF Serving stand-ins (hack/tfserving) play two serving pods on
loopback, one with MD_TFSERVING_FAULTS latency=230,error-rate=0.2 and one with latency=40. A bounded load
generator measures every request itself; the operator's scraper (controller/scrape.py) reads both pods'
Prometheus endpoints before and after, and its figures must match the generator's: request count and error
ratio exactly (counters), the rate within 10% (the scrapes bracket the load), p50 and p99 within the TF
histogram bucket that holds the generator's own quantile (that is the histogram's resolution). Then one pod
restarts (its counters start again from zero) and the window must still hold every request exactly once.
"""
from __future__ import annotations

import http.client
import json
import math
import os
import threading
import time
from pathlib import Path

import pytest

from modeldeploy.api import spec as specmod
from modeldeploy.controller import scrape, slo
from modeldeploy.resources.deployment import ServingTarget
from tests.integration.test_tfserving import Proc
from tests.unit.test_scrape import common_port, pod

pytestmark = pytest.mark.tf

SLOW_IP, FAST_IP = "127.0.0.3", "127.0.0.4"
# Each latency sits low in its TF bucket, (218.6, 393.5] and (37.5, 67.5] ms: a client sees a little more than
# the server measures, never less, so the margin is kept above.
SLOW_FAULTS, FAST_FAULTS = "latency=230,error-rate=0.2", "latency=40"
# TF Serving's request_latency buckets in milliseconds: Exponential(10 us, 1.8, 33).
BOUNDS_MS = [0.01 * 1.8 ** i for i in range(33)]
SPEC = specmod.parse({"metadata": {"name": "m", "namespace": "ml"}, "spec": {
    "model": {"uri": "s3://models/m/base"},
    "monitoring": {"slo": {"maxP99LatencyMs": 200, "maxErrorRatio": 0.01, "windowSeconds": 3600}}}})
TARGET = ServingTarget(1, SPEC.serving.image, SPEC.model.uri, "tensorflow")


def build_model(root: Path) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    class Model(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.reduce_sum(x, axis=1, keepdims=True)}

    model = Model()
    tf.saved_model.save(model, str(root / "m" / "1"), signatures={"serving_default": model.serve})


def stand_in(tmp: Path, name: str, ip: str, rest_port: int, faults: str) -> Proc:
    """One stand-in process: a serving pod at ip:rest_port with Prometheus on and `faults`."""
    return Proc(tmp, name, ["--port={GRPC}", "--rest_api_port={REST}", "--model_name=m",
                            f"--model_base_path={tmp / 'models' / 'm'}",
                            f"--monitoring_config_file={tmp / 'monitoring.config'}",
                            "--file_system_poll_wait_seconds=0", "--rest_api_num_threads=16",
                            "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1"],
                env={"MD_TFSERVING_FAULTS": faults}, ip=ip, rest_port=rest_port)


def predict(conn: http.client.HTTPConnection) -> tuple[float, int]:
    """(milliseconds, HTTP status) of one predict on a keep-alive connection, as the client sees it."""
    body = json.dumps({"instances": [[1.0, 2.0]]})
    started = time.perf_counter()
    conn.request("POST", "/v1/models/m:predict", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    return (time.perf_counter() - started) * 1000, response.status


class Load:
    """A bounded load generator: `concurrency` threads, each with one keep-alive connection per endpoint (HTTP
    clients of a Service hold connections; kube-proxy balances connections, not requests). `warm()` sends one
    request on every connection: the stand-in pays for a new connection (a server thread, its first predict)
    outside the span TF Serving measures, which a long-lived client pays once, not per request."""

    def __init__(self, endpoints: list[tuple[str, int]], concurrency: int = 6):
        self.endpoints = endpoints
        self.conns = [{ep: http.client.HTTPConnection(*ep, timeout=30) for ep in set(endpoints)}
                      for _ in range(concurrency)]

    def warm(self) -> None:
        for conns in self.conns:
            for conn in conns.values():
                assert predict(conn)[1] in (200, 500)

    def run(self, n: int) -> tuple[list, float]:
        """Exactly `n` predicts, request i to endpoints[i % len]; (results, seconds)."""
        results, lock, next_i = [], threading.Lock(), iter(range(n))

        def worker(conns):
            while True:
                with lock:
                    i = next(next_i, None)
                if i is None:
                    return
                result = predict(conns[self.endpoints[i % len(self.endpoints)]])
                with lock:
                    results.append(result)

        started = time.monotonic()
        threads = [threading.Thread(target=worker, args=(conns,)) for conns in self.conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        return results, time.monotonic() - started

    def close(self) -> None:
        for conns in self.conns:
            for conn in conns.values():
                conn.close()


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def bucket(ms: float) -> tuple[float, float]:
    """The TF histogram bucket (lower, upper] in milliseconds that holds `ms`."""
    upper = next(b for b in BOUNDS_MS if b >= ms)
    lower = max([0.0] + [b for b in BOUNDS_MS if b < ms])
    return lower, upper


@pytest.fixture(scope="module")
def pods(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slo")
    build_model(tmp / "models")
    (tmp / "monitoring.config").write_text('prometheus_config {\n  enable: true\n'
                                           '  path: "/monitoring/prometheus/metrics"\n}\n')
    port = common_port(SLOW_IP, FAST_IP)
    procs = {"slow": stand_in(tmp, "slow", SLOW_IP, port, SLOW_FAULTS),
             "fast": stand_in(tmp, "fast", FAST_IP, port, FAST_FAULTS)}
    try:
        for p in procs.values():
            p.wait_ready()
        yield tmp, port, procs
    finally:
        for p in procs.values():
            p.stop()


def test_scraped_figures_match_the_load_generator_and_survive_a_restart(pods):
    tmp, port, procs = pods
    slow, fast = (SLOW_IP, port), (FAST_IP, port)
    monitor = scrape.SLOMonitor(scrape.Scraper(workers=2, timeout=2.0), port=port)
    serving = [pod("slow", SLOW_IP), pod("fast", FAST_IP)]
    reach = lambda ip: True                                                       # noqa: E731
    generator = Load([fast, fast, slow])                                          # 2/3 fast, 1/3 slow
    generator.warm()

    t0 = time.monotonic()
    assert monitor.measure(SPEC, "uid", TARGET, serving, reach, t0) is None       # both baselines
    results, seconds = generator.run(240)
    t1 = time.monotonic()
    f = monitor.measure(SPEC, "uid", TARGET, serving, reach, t1)
    generator.close()

    latencies = [ms for ms, _ in results]
    errors = sum(code == 500 for _, code in results)
    assert len(results) == 240 and {code for _, code in results} <= {200, 500}
    assert 3 <= errors <= 40, "error-rate=0.2 on the 80 requests of the slow pod"
    assert f.pods == 2 and f.version == 1
    assert f.requests == 240 and f.error_ratio == pytest.approx(errors / 240, abs=1e-12)
    assert f.requests_per_second == pytest.approx(240 / (t1 - t0))
    assert f.requests_per_second == pytest.approx(240 / seconds, rel=0.10)
    for q, computed in ((0.5, f.p50_ms), (0.99, f.p99_ms)):
        measured = nearest_rank(latencies, q)
        lower, upper = bucket(measured)
        assert lower <= computed <= upper, (f"p{q * 100:g}: scraped {computed:.1f} ms, the generator measured "
                                            f"{measured:.1f} ms in bucket ({lower:.1f}, {upper:.1f}]")
    assert 37.4 < f.p50_ms <= 67.5 and 218.5 < f.p99_ms <= 393.5     # the faults' buckets: 40 ms and 230 ms
    assert slo.judge(SPEC.monitoring.slo, f) == (slo.VIOLATED, [
        f"p99 {f.p99_ms:.1f} ms > 200 ms", f"error ratio {f.error_ratio:.4f} > 0.01"])

    # The fast pod's container restarts: its counters start again from zero, below what was scraped before.
    procs["fast"].stop()
    procs["fast"] = stand_in(tmp, "fast-restarted", FAST_IP, port, FAST_FAULTS)
    procs["fast"].wait_ready()
    generator = Load([fast, fast, slow])
    more, _ = generator.run(90)
    generator.close()
    errors += sum(code == 500 for _, code in more)
    f = monitor.measure(SPEC, "uid", TARGET, serving, reach, time.monotonic())
    assert f.pods == 2 and f.requests == 240 + 90
    assert f.error_ratio == pytest.approx(errors / 330, abs=1e-12)
