"""The SLO scrapes' I/O on loopback HTTP servers (no TensorFlow): which pods are read, bounded concurrency, the
deadline, no redirects, the size cap, and a window per serving target."""
from __future__ import annotations

import importlib.util
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from modeldeploy.api import spec as specmod
from modeldeploy.controller import scrape
from modeldeploy.resources.config import PROMETHEUS_PATH
from modeldeploy.resources.deployment import ServingTarget

REPO = Path(__file__).resolve().parents[2]


def standin_metrics():
    """hack/tfserving/metrics.py (no TensorFlow), loaded under a private name: it renders TF Serving's format."""
    loader = importlib.util.spec_from_file_location("standin_metrics", REPO / "hack" / "tfserving" / "metrics.py")
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


class Server:
    """A loopback HTTP server whose answer a test sets: (status, headers, body) or a delay."""

    def __init__(self, ip: str, port: int = 0):
        self.answer = (200, {}, b"")
        self.delay = 0.0
        self.gate: threading.Event | None = None      # when set: each answer waits until the test opens it
        self.active = self.peak = self.hits = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                with outer.lock:
                    outer.active += 1
                    outer.hits += 1
                    outer.peak = max(outer.peak, outer.active)
                    outer.path = self.path
                try:
                    time.sleep(outer.delay)
                    if outer.gate is not None:
                        outer.gate.wait(30)
                    code, headers, body = outer.answer
                    self.send_response(code)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass            # a client that gave up (the deadline test's slow pod answers too late)
                finally:
                    with outer.lock:
                        outer.active -= 1

        self.httpd = ThreadingHTTPServer((ip, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers():
    made = []

    def make(ip="127.0.0.1", port=0):
        made.append(Server(ip, port))
        return made[-1]
    yield make
    for s in made:
        s.close()


def common_port(*ips) -> int:
    """A port free on every one of these loopback addresses (pods share the REST port, not the IP)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((ips[0], 0))
            port = s.getsockname()[1]
        try:
            for ip in ips[1:]:
                with socket.socket() as t:
                    t.bind((ip, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no common free port")


SPEC = specmod.parse({"metadata": {"name": "digits", "namespace": "ml"}, "spec": {
    "model": {"uri": "s3://models/digits/base"}, "monitoring": {"intervalSeconds": 5, "slo": {"windowSeconds": 60}}}})
TARGET = ServingTarget(1, SPEC.serving.image, "s3://models/digits/base", "tensorflow")


def pod(name, ip, version=1, ready=True, restarts=0):
    return {"metadata": {"name": name, "uid": f"uid-{name}", "labels": {"modeldeploy.io/version": str(version)}},
            "spec": {"containers": [{"name": "tf-serving", "image": SPEC.serving.image}]},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [{"name": "tf-serving", "restartCount": restarts}]}}


def test_measure_reads_the_ready_pods_of_the_target_within_reach(servers):
    ips = ("127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8")
    port = common_port(*ips)
    a, b, old, unready = (servers(ip, port) for ip in ips)
    m = standin_metrics()
    texts = {}
    for server, requests in ((a, 10), (b, 4)):
        registry = m.Registry()
        count = m.Counter(registry, "/tensorflow/serving/request_count", "", ("model_name", "status"))
        latency = m.Histogram(registry, "/tensorflow/serving/request_latency", "",
                              ("model_name", "API", "entrypoint", "status"), m.exponential_buckets(10, 1.8, 33))
        texts[server] = (registry, count, latency)
        server.answer = (200, {"Content-Type": "text/plain"}, registry.render().encode())
    monitor = scrape.SLOMonitor(scrape.Scraper(workers=2, timeout=1.0), port=port)
    pods = [pod("a", ips[0]), pod("b", ips[1]), pod("old", ips[2], version=0), pod("unready", ips[3], ready=False),
            pod("kwok", "10.244.0.9")]
    allowed = lambda ip: ip.startswith("127.")                                  # noqa: E731
    assert monitor.measure(SPEC, "u1", TARGET, pods, allowed, 0.0) is None      # the baselines
    assert (a.hits, b.hits, old.hits, unready.hits) == (1, 1, 0, 0) and a.path == PROMETHEUS_PATH
    for server, n, micros, code in ((a, 10, 300_000, "OK"), (b, 3, 20_000, "OK"), (b, 1, 20_000, "INTERNAL")):
        registry, count, latency = texts[server]
        for _ in range(n):
            count.inc("digits", code)
            latency.observe(micros, "digits", "Predict", "REST", code)
        server.answer = (200, {}, registry.render().encode())
    figures = monitor.measure(SPEC, "u1", TARGET, pods, allowed, 5.0)
    assert figures.version == 1 and figures.pods == 2 and figures.requests == 14
    assert figures.requests_per_second == pytest.approx(14 / 5) and figures.error_ratio == pytest.approx(1 / 14)
    assert 218.5 < figures.p99_ms < 393.5 and 11.5 < figures.p50_ms < 393.5
    # A rollout to another target starts a new window; forget() releases the memory.
    assert monitor.measure(SPEC, "u1", ServingTarget(0, SPEC.serving.image, "x", "tensorflow"), pods, allowed,
                           10.0) is None
    monitor.forget("u1")
    assert monitor.windows == {}


def test_concurrency_is_bounded_and_every_answer_arrives(servers):
    server = servers()
    server.delay, server.answer = 0.2, (200, {}, b"ok")
    scraper = scrape.Scraper(workers=2, timeout=2.0)
    urls = {i: f"http://127.0.0.1:{server.port}/m?{i}" for i in range(6)}
    assert scraper.fetch_all(urls) == {i: "ok" for i in range(6)}
    assert 1 <= server.peak <= 2       # bounded (the peak itself depends on scheduling)


def test_a_pod_that_does_not_answer_is_left_out_within_the_deadline(servers):
    slow, fast = servers(), servers()
    slow.gate, slow.answer, fast.answer = threading.Event(), (200, {}, b"late"), (200, {}, b"ok")
    scraper = scrape.Scraper(workers=4, timeout=0.3)
    try:
        out = scraper.fetch_all({"slow": f"http://127.0.0.1:{slow.port}/",
                                 "fast": f"http://127.0.0.1:{fast.port}/"})
        # The slow pod is still inside its answer (held until the gate opens): fetch_all gave up on it rather than
        # waiting for it. Without the deadline it would have returned only once the gate let the answer out
        # (after 30 s), with "slow" in the result and no request in flight.
        assert out == {"fast": "ok"}
        assert slow.hits == 1 and slow.active == 1 and not slow.gate.is_set()
    finally:
        slow.gate.set()


def test_redirects_errors_and_oversized_answers_are_left_out(servers):
    target, redirect, error, big = servers(), servers(), servers(), servers()
    target.answer = (200, {}, b"secret")
    redirect.answer = (302, {"Location": f"http://127.0.0.1:{target.port}/"}, b"")
    error.answer = (404, {}, b"<HTML>Not Found</HTML>")        # prometheus off: TF Serving answers 404
    big.answer = (200, {}, b"x" * 2048)
    scraper = scrape.Scraper(workers=4, timeout=1.0, max_bytes=1024)
    assert scraper.fetch_all({k: f"http://127.0.0.1:{s.port}/" for k, s in
                              (("redirect", redirect), ("error", error), ("big", big))}) == {}
    assert target.hits == 0


class _AskedScraper:
    """Answers every URL with an empty exposition and records which pods were asked."""

    def __init__(self):
        self.asked = []

    def fetch_all(self, urls: dict) -> dict:
        self.asked.append(sorted(urls))
        return {key: "" for key in urls}


def test_canary_and_stable_pods_are_judged_apart_by_their_track():
    scraper = _AskedScraper()
    monitor = scrape.SLOMonitor(scraper)
    canary = pod("c", "10.0.0.3")
    canary["metadata"]["labels"]["modeldeploy.io/track"] = "canary"
    pods = [pod("s1", "10.0.0.1"), pod("s2", "10.0.0.2"), canary]
    anywhere = lambda ip: True                                                    # noqa: E731
    monitor.measure(SPEC, "u1", TARGET, pods, anywhere, 0.0)
    monitor.measure(SPEC, "u1", TARGET, pods, anywhere, 0.0, track="canary")
    assert scraper.asked == [["uid-s1", "uid-s2"], ["uid-c"]]
    assert set(monitor.windows) == {("u1", "stable"), ("u1", "canary")}
    monitor.forget("u1", "canary")                  # the canary is gone: its window goes, the stable one stays
    assert set(monitor.windows) == {("u1", "stable")}
