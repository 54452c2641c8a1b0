"""controller/events.py: Events are queued by reconciles and posted in order by one thread, bounded."""
from __future__ import annotations

import threading

from modeldeploy.controller import apply, events
from tests.unit.fake_kube_api import FakeApi

BODY = {"metadata": {"name": "digits", "namespace": "ml", "uid": "u1", "resourceVersion": "7"}}


def test_an_event_is_about_the_model_deployment():
    event = events.build(BODY, "Normal", "RolloutStarted", "x" * 2000, "pod-1")
    assert event["involvedObject"] == {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
                                       "name": "digits", "namespace": "ml", "uid": "u1", "resourceVersion": "7"}
    assert event["metadata"]["name"].startswith("digits.") and event["metadata"]["namespace"] == "ml"
    assert (event["type"], event["reason"], len(event["message"])) == ("Normal", "RolloutStarted", 1024)
    assert event["reportingInstance"] == "pod-1" and event["count"] == 1
    assert events.build(BODY, "Normal", "R", "m")["metadata"]["name"] != event["metadata"]["name"]


def test_events_are_posted_in_order_by_one_thread_and_a_failure_does_not_stop_it():
    posted, threads = [], set()

    def post(event):
        threads.add(threading.current_thread().name)
        if event["reason"] == "Bad":
            raise RuntimeError("boom")
        posted.append(event["reason"])
    recorder = events.Recorder(post)
    for reason in ("A", "Bad", "B", "C"):
        recorder.record(events.build(BODY, "Normal", reason, ""))
    assert recorder.flush(5)
    assert posted == ["A", "B", "C"] and threads == {"modeldeploy events"}


def test_a_full_queue_drops_events_and_never_blocks_the_reconcile():
    gate = threading.Event()
    recorder = events.Recorder(lambda event: gate.wait(5), capacity=2)
    for reason in ("A", "B", "C", "D"):                 # A is being posted; B, C queued; D dropped
        recorder.record(events.build(BODY, "Normal", reason, ""))
        if reason == "A":
            while recorder._queue.qsize():
                threading.Event().wait(0.01)
    assert recorder.dropped == 1
    gate.set()
    assert recorder.flush(5)


def test_kube_queues_the_event_and_its_thread_posts_it():
    api = FakeApi()
    kube = apply.Kube(api.client)
    kube.post_event(BODY, "Warning", "RolledBack", "back to 1")
    assert kube.events.flush(5)
    [call] = api.writes()
    assert (call.method, call.path) == ("POST", "/api/v1/namespaces/ml/events")
    assert call.body["reason"] == "RolledBack" and call.body["involvedObject"]["uid"] == "u1"
    assert kube.writes == 1
