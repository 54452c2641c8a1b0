"""Events about ModelDeployments, posted off the reconcile path, as Kubernetes' own event recorders post them.

An Event is information for `kubectl describe` and `kubectl get events`, never state the operator reads back: a
reconcile queues it and goes on; one thread posts the queue in order. So a reconcile never waits on an Event,
and when thousands of objects change at once their Events take at most one request in flight beside the
workers' writes of children and status, instead of one per worker. The queue is bounded: when it is full (the
API server is far behind) an Event is dropped and counted in the log, as client-go's broadcaster drops them.
CAPACITY is sized for thousands of objects changing at once (2,000 created together queue two Events each while
the thread posts a few dozen a second; 1,000 dropped 846 of them): about a kilobyte per queued Event.

`build(body, type, reason, message, instance)` is the pure core/v1 Event; `Recorder` is the queue and its thread.
"""
from __future__ import annotations

import logging
import queue
import threading
import uuid
from datetime import datetime, timezone
from typing import Callable

from modeldeploy.api import names
from modeldeploy.api.spec import API_GROUP, API_VERSION, KIND
from modeldeploy.api.status import timestamp

log = logging.getLogger(__name__)

CAPACITY = 10_000


def build(body: dict, type_: str, reason: str, message: str, instance: str = "") -> dict:
    """A core/v1 Event about the ModelDeployment `body`, timestamped now."""
    meta = body["metadata"]
    now = timestamp(datetime.now(timezone.utc))
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta.get("uid"),
                           "resourceVersion": meta.get("resourceVersion")},
        "type": type_, "reason": reason, "message": message[:1024],
        "source": {"component": names.APP_NAME}, "reportingComponent": names.APP_NAME,
        "reportingInstance": instance or names.APP_NAME,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }


class Recorder:
    """A bounded queue of Events and the one daemon thread (started at the first Event) that hands each to
    `post` in order. `post` reports its own failures: an Event that cannot be posted is not retried."""

    def __init__(self, post: Callable[[dict], None], capacity: int = CAPACITY):
        self._post = post
        self._queue: queue.Queue = queue.Queue(capacity)
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        self.dropped = 0

    def record(self, event: dict) -> None:
        """Queue `event`; never blocks (dropped, with a warning, when the queue is full)."""
        if self._thread is None:
            with self._starting:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="modeldeploy events", daemon=True)
                    self._thread.start()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            log.warning("event queue full (%d): dropped Event %s about %s (%d dropped so far)",
                        self._queue.maxsize, event.get("reason"), event["involvedObject"].get("name"), self.dropped)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued Event was handed to `post` (tests, shutdown); False on timeout."""
        done = threading.Event()
        threading.Thread(target=lambda: (self._queue.join(), done.set()), daemon=True).start()
        return done.wait(timeout)

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                self._post(event)
            except Exception:                   # the thread must outlive any one Event
                log.exception("posting Event %s failed", event.get("reason"))
            finally:
                self._queue.task_done()
