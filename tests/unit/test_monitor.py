"""controller/monitor.py: which watch events of a ModelDeployment cause a reconcile. Kopf's create/update/resume
handlers are not used (their diff-base annotation is a write per object), so the monitor alone must reconcile a
new object, a new generation and a spec change that arrives mid-reconcile, and must not reconcile on status
echoes (our own writes)."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from modeldeploy.controller.monitor import Monitor


def md(generation: int = 1, rv: int = 1, uid: str = "u1", **status) -> dict:
    return {"metadata": {"namespace": "ns", "name": "m", "uid": uid, "generation": generation,
                         "resourceVersion": str(rv)}, "status": status}


class Recorder:
    """reconcile_fn that records (generation, interval_check) and can hold a reconcile until released."""

    def __init__(self, fail: int = 0):
        self.calls: list[tuple[int, bool]] = []
        self.fail = fail
        self.hold: threading.Event | None = None
        self.started = threading.Event()

    def __call__(self, body: dict, interval_check: bool, may_defer: bool):
        self.calls.append((body["metadata"]["generation"], interval_check))
        self.started.set()
        if self.hold is not None:
            self.hold.wait(5)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("API unavailable")
        return None, False


def wait(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def drive(monitor: Monitor, script) -> None:
    """Run the monitor's loop while `script(monitor)` runs in a thread (as Kopf's event handlers call it)."""
    finished = threading.Event()

    async def main():
        task = asyncio.create_task(monitor.run(stopped=finished.is_set))
        try:
            await asyncio.get_running_loop().run_in_executor(None, script, monitor)
        finally:
            finished.set()
            monitor._poke()
            await task
    asyncio.run(main())


def test_a_new_object_is_reconciled_once_and_status_echoes_cost_nothing():
    rec = Recorder()

    def script(m: Monitor):
        m.observe(md())
        wait(lambda: rec.calls)
        m.observe(md(rv=2, phase="Ready"))    # our own status write, echoed: same generation
        time.sleep(0.6)
    drive(Monitor(rec, lambda body: 3600.0, workers=2), script)
    assert rec.calls == [(1, False)]          # not an interval check: start-up never counts as a failed check


def test_a_new_generation_is_reconciled_at_once_and_an_older_body_is_ignored():
    rec = Recorder()

    def script(m: Monitor):
        m.observe(md())
        wait(lambda: len(rec.calls) == 1)
        m.observe(md(generation=2, rv=5))
        m.observe(md(generation=1, rv=3))     # reordered, older: kept out
        wait(lambda: len(rec.calls) == 2)
        time.sleep(0.6)
    drive(Monitor(rec, lambda body: 3600.0, workers=2), script)
    assert rec.calls == [(1, False), (2, False)]


def test_a_spec_change_during_a_reconcile_is_reconciled_after_it():
    rec = Recorder()
    rec.hold = threading.Event()

    def script(m: Monitor):
        m.observe(md())
        rec.started.wait(5)
        m.observe(md(generation=2, rv=2))
        rec.hold.set()
        wait(lambda: len(rec.calls) == 2)
    drive(Monitor(rec, lambda body: 3600.0, workers=2), script)
    assert [g for g, _ in rec.calls] == [1, 2]


def test_a_recreated_object_with_the_same_name_is_reconciled():
    rec = Recorder()

    def script(m: Monitor):
        m.observe(md())
        wait(lambda: len(rec.calls) == 1)
        m.observe(md(), deleted=True)
        m.observe(md(uid="u2", rv=9))
        wait(lambda: len(rec.calls) == 2)
    drive(Monitor(rec, lambda body: 3600.0, workers=2), script)


def test_a_failed_reconcile_is_retried_with_backoff():
    rec = Recorder(fail=1)
    monitor = Monitor(rec, lambda body: 3600.0, workers=2)

    def script(m: Monitor):
        m.observe(md())
        wait(lambda: len(rec.calls) == 2)      # 2 s later (2 ** 1)
        wait(lambda: m.entries[("ns", "m")].failures == 0)
    drive(monitor, script)


def test_the_interval_check_follows_the_first_reconcile():
    rec = Recorder()

    def script(m: Monitor):
        m.observe(md())
        wait(lambda: len(rec.calls) == 2)      # the interval's floor is 1 s (Monitor._interval)
    drive(Monitor(rec, lambda body: 0.2, workers=2), script)
    assert rec.calls == [(1, False), (1, True)]


def test_many_objects_run_in_due_order_at_most_workers_at_a_time_and_the_heap_stays_small():
    running, peak, order = [0], [0], []
    lock = threading.Lock()

    def reconcile(body, interval_check, may_defer):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            order.append(body["metadata"]["name"])
        time.sleep(0.002)
        with lock:
            running[0] -= 1
        return None, False

    monitor = Monitor(reconcile, lambda body: 3600, workers=4)

    def script(m):
        for i in range(300):
            m.observe(dict(md(), metadata=dict(md()["metadata"], name=f"m{i}", uid=f"u{i}")))
        wait(lambda: len(order) == 300)
        m.observe({"metadata": {"namespace": "ns", "name": "m7"}}, deleted=True)
        for i in (3, 7, 5):
            m.touch("ns", f"m{i}", delay=0)
        wait(lambda: len(order) == 302)
        wait(lambda: m.busy == 0)
    drive(monitor, script)
    assert sorted(order[:300]) == sorted(f"m{i}" for i in range(300)) and order[300:] == ["m3", "m5"]
    assert peak[0] <= 4 and monitor.busy == 0
    assert len(monitor._heap) <= 300 + 3          # one live item per object, stale ones dropped as they surface


def test_in_a_burst_new_objects_run_first_and_a_pass_that_put_off_its_status_runs_again_on_a_touch():
    """workers=1: a lone object may put off its status on its first pass only, and runs again soon. Then three
    new objects at once: the first starts with work left waiting, which makes a burst; each puts off its status;
    a child's event (touch) runs one of them again at once, and each runs again when it may defer no longer
    (0.5 s after its first pass here), when it may put off nothing."""
    calls = []

    def reconcile(body, interval_check, may_defer):
        calls.append((body["metadata"]["name"], may_defer, time.monotonic()))
        return None, may_defer

    def script(m):
        m.observe(dict(md(), metadata=dict(md()["metadata"], name="lone", uid="u")))
        wait(lambda: len(calls) == 2)
        with m.lock:            # all three before the loop looks
            for i in range(3):
                m.observe(dict(md(), metadata=dict(md()["metadata"], name=f"m{i}", uid=f"u{i}")))
        wait(lambda: len(calls) == 5)
        m.touch("ns", "m1", delay=0)
        wait(lambda: len(calls) == 9)
    drive(Monitor(reconcile, lambda body: 3600, workers=1, crowd_seconds=0.5, max_defer_seconds=0.5),
          script)
    assert [c[:2] for c in calls] == [("lone", True), ("lone", False), ("m0", True), ("m1", True), ("m2", True),
                                      ("m1", True), ("m0", False), ("m1", False), ("m2", False)]
    assert calls[6][2] - calls[2][2] >= 0.5


@pytest.mark.parametrize("max_defer, second_passes", [(60.0, [True] * 4), (0.5, [False] * 4)])
def test_a_burst_puts_off_a_new_objects_status_until_it_is_over_or_for_max_defer_seconds(max_defer, second_passes):
    """workers=1, passes of 0.15 s, 8 new objects: the first passes take 1.2 s, so every object's second pass
    starts more than `crowd_seconds` (0.3) after its first one, in a burst that still lasts (work is waiting):
    it may put its status off, unless `max_defer_seconds` (0.5 here) have passed since its first pass. Its
    second pass ends its deferral (as a status write would)."""
    calls = []

    def reconcile(body, interval_check, may_defer):
        name = body["metadata"]["name"]
        calls.append((name, may_defer))
        time.sleep(0.15)
        return None, may_defer and [c[0] for c in calls].count(name) == 1

    def script(m):
        with m.lock:
            for i in range(8):
                m.observe(dict(md(), metadata=dict(md()["metadata"], name=f"m{i}", uid=f"u{i}")))
        m._poke()
        wait(lambda: len(calls) == 16)
    drive(Monitor(reconcile, lambda body: 3600, workers=1, crowd_seconds=0.3, max_defer_seconds=max_defer), script)
    assert calls[:8] == [(f"m{i}", True) for i in range(8)]
    assert [d for _, d in calls[8:12]] == second_passes      # the first four: later ones may find no work waiting
