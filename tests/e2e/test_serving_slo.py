"""Canary rollouts on the local cluster, judged on TF Serving's own metrics under a real load.

One ModelDeployment (the tiny SavedModel of tests/fixtures/dataplane.py, served as is, so a new version costs no Job) with
two replicas on the CPU runner node, an SLO and two canary steps (25% and 50%: one of the two replicas each). A bounded load generator sends
:predict requests the way kube-proxy spreads connections: each connection goes to one ready endpoint of the
Service (a pod its selector matches, Ready), chosen at random when it opens, and is reopened every few requests,
so traffic follows the endpoints as they change. Every answer is counted per version (stable or canary, by the
pod's track label), failed ones too.

1. Version 2, healthy: the canary takes one of the two replicas, passes both steps and is promoted: the serving
   Deployment runs version 2 and the canary Deployment is gone. Requests in flight on a connection to a pod
   that the promotion's rollout stops fail, as they would through kube-proxy; they are counted and stay few.
2. Version 3 with 300 ms added to each predict (the stand-in's `latency` fault, given to the pods that start
   while the namespace carries it -- only the canary's): rolled back within two SLO windows of the canary
   answering; version 2 keeps serving and none of its requests failed.
3. Version 4 answering 20% of predicts with INTERNAL (`error-rate=0.2`): rolled back the same way.

An SLO violation on the serving version (every pod 300 ms slower) sets Degraded (Ready stays True) within two
windows, with a p99 in status.serving.metrics that matches the load generator's within the histogram's bucket
resolution; it clears once the pods are fast again.

Autoscaling under the same kind of load is shown on the demo's digits model (tests/e2e/test_digits.py).

The figures in status.rollout and the time each verdict took are printed for the benchmark's table.
"""
from __future__ import annotations

import json
import time

import pytest

from tests.fixtures.cluster import wait_for
from tests.fixtures.operator import apply_md, condition, get, get_md, is_ready, wait_md
from tests.fixtures.dataplane import Load, annotate_faults, bench_record, plain, serving_pods

pytestmark = [pytest.mark.cluster, pytest.mark.tf, pytest.mark.s3]
NAME = "canaried"
WINDOW = 30
SLO = {"maxP99LatencyMs": 150, "maxErrorRatio": 0.05, "minRequestsPerSecond": 1, "windowSeconds": WINDOW}
ROLLOUT = {"strategy": "canary", "steps": [{"weight": 25, "durationSeconds": WINDOW},
                                           {"weight": 50, "durationSeconds": WINDOW}],
           "maxLatencyRatio": 1.5, "maxErrorRatioIncrease": 0.02}
BODY = json.dumps({"instances": [[0.1, 0.2, 0.3, 0.4]]})


def canaried(uri: str, version: int) -> dict:
    return plain(NAME, uri, version=version, serving={"replicas": 2},
                 monitoring={"intervalSeconds": 5, "failureThreshold": 2, "prometheus": True, "slo": SLO},
                 rollout={**ROLLOUT, "progressDeadlineSeconds": 240})


def rollout(md: dict) -> dict:
    return md["status"].get("rollout") or {}


def canary_ready_at(kubectl, namespace: str) -> float:
    """Wait until a canary pod is Ready; returns when (monotonic)."""
    wait_for(lambda: any(p["metadata"]["labels"].get("modeldeploy.io/track") == "canary" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        for p in serving_pods(kubectl, namespace, NAME)), 240, "a Ready canary pod")
    return time.monotonic()


def rolled_back(kubectl, namespace: str, load: Load, uri: str, version: int, faults: str, stable: int) -> dict:
    """Apply `version` with `faults` on its pods; the canary must be rolled back within two SLO windows of
    answering, the stable version serving throughout. Returns the figures."""
    annotate_faults(kubectl, namespace, faults)
    apply_md(kubectl, namespace, canaried(uri, version))
    ready = canary_ready_at(kubectl, namespace)
    before = load.snapshot()
    md = wait_md(kubectl, namespace, NAME, lambda o: rollout(o).get("phase") == "RolledBack"
                 and rollout(o).get("canaryVersion") == version, 4 * WINDOW + 60, f"version {version} rolled back")
    detection = time.monotonic() - ready
    counts = load.since(before)
    print(f"canary {version} ({faults}): rolled back {detection:.1f}s after its pod was Ready; "
          f"{rollout(md).get('message')}; requests {counts}")
    assert detection <= 2 * WINDOW + 10, f"rollback took {detection:.1f}s, more than two {WINDOW}s windows"
    assert condition(md, "Stalled")["status"] == "True", md["status"]["conditions"]
    assert md["status"]["model"]["servingVersion"] == stable
    assert get(kubectl, namespace, "deployment", f"{NAME}-canary") is None or wait_for(
        lambda: get(kubectl, namespace, "deployment", f"{NAME}-canary") is None, 60, "the canary Deployment gone")
    assert counts.get(("stable", "failed"), 0) == 0, counts
    assert counts.get(("stable", "ok"), 0) > 0, counts
    figures = {"version": version, "faults": faults, "detectionSeconds": round(detection, 1),
               "windowSeconds": WINDOW, "requests": {f"{t} {r}": n for (t, r), n in counts.items()}}
    bench_record(f"canary {faults}", figures)
    return figures


@pytest.mark.timeout(1500)
def test_canary_promoted_then_slow_and_failing_canaries_rolled_back(kubectl, namespace, operator, models):
    apply_md(kubectl, namespace, canaried(models["good"], 1))
    wait_md(kubectl, namespace, NAME, is_ready, 400, "version 1 Ready")
    with Load(kubectl, namespace, NAME, BODY) as load:
        wait_for(lambda: load.snapshot().get(("stable", "ok"), 0) > 20, 60, "the load reaching version 1")

        # 1. A healthy canary: one of two replicas, advanced to the second step, then promoted after it.
        before = load.snapshot()
        apply_md(kubectl, namespace, canaried(models["good"], 2))
        promoted_from = time.monotonic()
        md = wait_md(kubectl, namespace, NAME, lambda o: rollout(o).get("phase") == "Progressing", 120,
                     "the canary progressing")
        assert md["status"]["model"]["servingVersion"] == 1 and rollout(md)["canaryVersion"] == 2
        canary = wait_for(lambda: get(kubectl, namespace, "deployment", f"{NAME}-canary"), 60, "the canary Deployment")
        assert canary["spec"]["replicas"] == 1
        assert get(kubectl, namespace, "deployment", NAME)["spec"]["replicas"] == 1
        wait_for(lambda: load.snapshot().get(("canary", "ok"), 0) > 0, 240, "requests answered by the canary")
        md = wait_md(kubectl, namespace, NAME, lambda o: rollout(o).get("step") == 2, 4 * WINDOW + 120,
                     "the canary advanced to step 2")
        assert rollout(md)["phase"] == "Progressing" and rollout(md)["weight"] == 50, rollout(md)
        md = wait_md(kubectl, namespace, NAME, lambda o: rollout(o).get("phase") == "Promoted" and is_ready(o),
                     6 * WINDOW + 120, "the canary promoted")
        assert md["status"]["model"]["servingVersion"] == 2
        wait_for(lambda: get(kubectl, namespace, "deployment", f"{NAME}-canary") is None, 60,
                 "the canary Deployment removed after promotion")
        wait_for(lambda: all(p["metadata"]["labels"].get("modeldeploy.io/track") != "canary"
                             for p in serving_pods(kubectl, namespace, NAME)), 120, "the canary pods gone")
        counts = load.since(before)
        print(f"canary 2 promoted: {rollout(md).get('message')}; requests {counts}")
        failed = sum(n for (_, result), n in counts.items() if result == "failed")
        assert failed <= 0.02 * sum(counts.values()), counts
        bench_record("canary healthy", {"version": 2, "faults": "", "promotedSeconds": round(
            time.monotonic() - promoted_from, 1), "windowSeconds": WINDOW,
            "requests": {f"{t} {r}": n for (t, r), n in counts.items()}})
        wait_md(kubectl, namespace, NAME, lambda o: o["status"]["serving"].get("readyReplicas") == 2, 240,
                "two ready replicas of version 2")

        # 2. and 3. A slow canary, then a failing one: each rolled back, version 2 answering throughout.
        slow = rolled_back(kubectl, namespace, load, models["good"], 3, "latency=300", stable=2)
        assert "p99" in rollout(get_md(kubectl, namespace, NAME)).get("message", ""), slow
        failing = rolled_back(kubectl, namespace, load, models["good"], 4, "error-rate=0.2", stable=2)
        assert "error" in rollout(get_md(kubectl, namespace, NAME)).get("message", "").lower(), failing


def restart_pods(kubectl, namespace: str, name: str) -> None:
    """Delete the serving pods; their replacements start with the namespace's faults (read at start)."""
    kubectl("delete", "pods", "-l", f"app.kubernetes.io/instance={name},app.kubernetes.io/component=serving",
            "--wait=false", namespace=namespace)


@pytest.mark.timeout(900)
def test_slo_violation_on_the_serving_version_sets_degraded_and_clears(kubectl, namespace, operator, models):
    name = "watched"
    apply_md(kubectl, namespace, plain(name, models["good"], monitoring={
        "intervalSeconds": 5, "failureThreshold": 2, "prometheus": True, "slo": SLO}))
    wait_md(kubectl, namespace, name, is_ready, 400, "Ready")
    with Load(kubectl, namespace, name, BODY) as load:
        wait_md(kubectl, namespace, name, lambda o: (o["status"].get("serving", {}).get("metrics") or {}).get(
            "slo") == "Met", 3 * WINDOW, "the SLO met under load")
        annotate_faults(kubectl, namespace, "latency=300")
        restart_pods(kubectl, namespace, name)
        slow_from = time.monotonic()
        md = wait_md(kubectl, namespace, name, lambda o: condition(o, "Degraded").get("reason") == "SLOViolated",
                     2 * WINDOW + 240, "Degraded SLOViolated")
        detection = time.monotonic() - slow_from
        assert condition(md, "Ready")["status"] == "True", md["status"]["conditions"]
        # Once the window holds only slow answers, the operator's p99 (from TF Serving's histogram) and the
        # client's agree within a bucket (the stand-in's buckets grow by 1.8x; the client adds HTTP time).
        wait_md(kubectl, namespace, name, lambda o: (o["status"]["serving"].get("metrics") or {}).get(
            "p99Ms", 0) >= 300, 2 * WINDOW + 60, "p99 over 300 ms in status")
        # The client's window holds only slow answers once even its fastest answer of the last WINDOW s is slow;
        # then the operator's next health checks measure a window of the same slow pods.
        wait_for(lambda: load.fastest_ms(WINDOW) >= 300, 2 * WINDOW + 60,
                 "the client's last window to hold only answers of the slow pods")
        operator.wait_reconciles(2, 60, "two health checks over a window of slow answers")
        reported = get_md(kubectl, namespace, name)["status"]["serving"]["metrics"]["p99Ms"]
        measured = load.p99_ms(WINDOW)
        print(f"SLO: Degraded {detection:.0f}s after the slow pods were started; p99 {reported} ms in status, "
              f"{measured:.0f} ms measured by the client")
        assert measured / 1.8 <= reported <= measured * 1.8, (reported, measured)
        kubectl("annotate", "namespace", namespace, "tfserving.modeldeploy.io/faults-")
        restart_pods(kubectl, namespace, name)
        fast_from = time.monotonic()
        md = wait_md(kubectl, namespace, name, lambda o: condition(o, "Degraded").get("status") == "False",
                     2 * WINDOW + 240, "Degraded cleared")
        cleared = time.monotonic() - fast_from
        print(f"SLO: Degraded cleared {cleared:.0f}s after fast pods were started; requests {load.snapshot()}")
        bench_record("stable latency=300", {"detectionSeconds": round(detection, 1), "clearedSeconds": round(
            cleared, 1), "p99MsStatus": reported, "p99MsClient": round(measured, 1), "windowSeconds": WINDOW,
            "requests": {f"{t} {r}": n for (t, r), n in load.snapshot().items()}})
