"""The I/O side of SLOs: read TF Serving's Prometheus endpoint on each ready serving pod, feed the object's window.

`SLOMonitor.measure(spec, uid, target, pods, allowed, now)` is called by `reconcile()` on interval checks, and
only for objects with `spec.monitoring.slo`. It picks the ready pods of the serving target whose IP the operator
may reach, fetches `http://<podIP>:8501<PROMETHEUS_PATH>` from all of them at once on a process-wide thread pool
(at most `workers` fetches in flight across every object, so a thousand objects cannot open a thousand sockets),
each with a deadline and a size cap, and returns `slo.Figures` over the window. What it keeps in memory per
object: the last scrape of each pod (to compute increases) and the steps of one window (slo.Window). A failed
fetch is logged at debug level and left out; it is never read as zero traffic.

During a canary rollout the canary pods and the stable pods are judged apart: `track="canary"` reads only the
pods labelled modeldeploy.io/track=canary, the default `track="stable"` only the others, each track with a
window of its own.
"""
from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import urllib.error
from dataclasses import replace
from typing import Callable

from modeldeploy.api import names
from modeldeploy.controller import slo, tfmetrics
from modeldeploy.controller.canary import is_canary_pod
from modeldeploy.controller.health import NO_REDIRECTS
from modeldeploy.controller.observe import is_ready_pod_of
from modeldeploy.resources.config import PROMETHEUS_PATH

log = logging.getLogger(__name__)

MAX_BYTES = 8 << 20     # TF Serving with many models and batching metrics prints a few hundred kB; a cap, not a need


def fetch(url: str, timeout: float, max_bytes: int = MAX_BYTES) -> str:
    """One GET of a metrics endpoint; raises OSError/ValueError on anything but a complete 200 answer."""
    # No redirects: a pod's metrics are read where they are.
    with NO_REDIRECTS.open(url, timeout=timeout) as resp:       # noqa: S310 - http to our own pods
        body = resp.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise ValueError(f"more than {max_bytes} bytes")
    return body.decode("utf-8", errors="replace")


class Scraper:
    """Fetches many URLs at once on a bounded pool, each within `timeout` seconds (the whole batch too)."""

    def __init__(self, workers: int = 8, timeout: float = 2.0, max_bytes: int = MAX_BYTES):
        self.timeout, self.max_bytes = timeout, max_bytes
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scrape")

    def fetch_all(self, urls: dict) -> dict:
        """key -> text for every URL that answered in time; the others are left out."""
        futures = {self.pool.submit(fetch, url, self.timeout, self.max_bytes): key for key, url in urls.items()}
        # The socket timeout bounds each read, not a slow trickle: the batch deadline bounds the whole. Queueing
        # behind other objects' fetches counts against it too, which is what keeps a reconcile bounded.
        done, late = concurrent.futures.wait(futures, timeout=self.timeout * 2 + 1)
        out = {}
        for future in done:
            key = futures[future]
            try:
                out[key] = future.result()
            except (OSError, ValueError, urllib.error.URLError) as exc:
                log.debug("scrape of %s failed: %s", urls[key], exc)
        for future in late:
            future.cancel()
            log.debug("scrape of %s timed out", urls[futures[future]])
        return out


def _restarts(pod: dict) -> int:
    return sum(int(c.get("restartCount") or 0) for c in (pod.get("status") or {}).get("containerStatuses") or ())


class SLOMonitor:
    """Per-object windows, fed by scrapes of the serving pods (see the module docstring)."""

    def __init__(self, scraper: Scraper | None = None, port: int = names.REST_PORT):
        self.port = port              # TF Serving's REST port, where the Prometheus path answers
        self.scraper = scraper or Scraper(
            workers=int(os.environ.get("MODELDEPLOY_SCRAPE_WORKERS", "8")),
            timeout=float(os.environ.get("MODELDEPLOY_SCRAPE_TIMEOUT", "2")))
        self.windows: dict = {}       # (object uid, track) -> (serving target, slo.Window)
        self.lock = threading.Lock()

    def measure(self, spec, uid: str, target, pods: list[dict], allowed: Callable[[str], bool],
                now: float, track: str = names.TRACK_STABLE) -> slo.Figures | None:
        """Scrape the ready pods of `target` on `track` and return the figures over
        spec.monitoring.slo.windowSeconds (None until two passes have read a pod). A new target (a rollout, a
        rollback) starts a new window."""
        with self.lock:
            held = self.windows.get((uid, track))
            if held is None or held[0] != target:
                held = self.windows[(uid, track)] = (target, slo.Window())
        window = held[1]
        canary = track == names.TRACK_CANARY
        pods = [p for p in pods if is_canary_pod(p) == canary]
        ready = {}
        for pod in pods:
            ip = (pod.get("status") or {}).get("podIP")
            if ip and is_ready_pod_of(pod, target) and allowed(ip):
                ready[(pod.get("metadata") or {}).get("uid") or pod["metadata"]["name"]] = (pod, ip)
        texts = self.scraper.fetch_all({key: f"http://{ip}:{self.port}{PROMETHEUS_PATH}"
                                        for key, (_, ip) in ready.items()})
        samples = {key: (_restarts(ready[key][0]), tfmetrics.parse(text, spec.model.name))
                   for key, text in texts.items()}
        alive = {(p.get("metadata") or {}).get("uid") or p["metadata"]["name"] for p in pods}
        figures = window.observe(now, samples, spec.monitoring.slo.window_seconds, alive=alive)
        if len(texts) < len(ready):
            log.debug("%s/%s: read the metrics of %d of %d ready pods", spec.namespace, spec.name, len(texts),
                      len(ready))
        return None if figures is None else replace(figures, version=target.version)

    def forget(self, uid: str, track: str | None = None) -> None:
        """Drop an object's windows (deleted, or its SLO removed), or the window of one track (a canary gone)."""
        with self.lock:
            for key in [k for k in self.windows if k[0] == uid and track in (None, k[1])]:
                del self.windows[key]
