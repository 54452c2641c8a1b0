"""The Argo CD health check (manifests/argocd/health-modeldeployment.lua) on statuses the operator really writes.

Every status any test reads through tests.fixtures.operator.get_md (wait_md polls through it) is judged at that
read, in that test: the Lua's answer must agree with the operator's health metric, the conditions and kstatus
(tests/argo_health.assert_argo_health). So no test has to run after the others to judge what they recorded.
This one makes sure the judging never runs on nothing: it drives a ModelDeployment of its own through the states
a rollout passes (created, Ready, a new generation the operator has not seen yet, Ready again), records every
status it read, and requires the judged ones to include Progressing and Healthy.
"""
from __future__ import annotations

import collections

import pytest

from tests.argo_health import lua_health
from tests.fixtures.operator import apply_md, get_md, is_ready, md_body, wait_md
from tests.kstatus import load_samples

pytestmark = pytest.mark.cluster

FAST = {"monitoring": {"intervalSeconds": 5, "failureThreshold": 2}, "rollout": {"progressDeadlineSeconds": 30}}


@pytest.mark.timeout(240)
def test_argocd_health_agrees_on_recorded_statuses(kubectl, namespace, operator):
    seen: collections.Counter = collections.Counter()

    def judged(obj: dict) -> dict:
        seen[lua_health(obj)[0]] += 1          # get_md has already judged it (and failed the test if need be)
        return obj

    apply_md(kubectl, namespace, md_body("argo", serving={"replicas": 2}, **FAST))
    judged(get_md(kubectl, namespace, "argo"))
    wait_md(kubectl, namespace, "argo", lambda o: is_ready(judged(o)), 60, "version 1 Ready")
    # A new generation while no operator runs: its status still describes generation 1, which Argo CD must not
    # call Healthy.
    operator.stop()
    apply_md(kubectl, namespace, md_body("argo", version=2, serving={"replicas": 2}, **FAST))
    stale = judged(get_md(kubectl, namespace, "argo"))
    assert stale["metadata"]["generation"] == 2 and stale["status"]["observedGeneration"] == 1, stale["status"]
    assert lua_health(stale)[0] == "Progressing", lua_health(stale)
    operator.start()
    wait_md(kubectl, namespace, "argo", lambda o: is_ready(judged(o))
            and o["status"]["model"].get("servingVersion") == 2, 60, "version 2 Ready")

    print(f"Argo CD health over {sum(seen.values())} statuses read: {dict(sorted(seen.items()))}")
    assert {"Progressing", "Healthy"} <= seen.keys(), seen
    # Each status read was recorded too (tests.kstatus.record_status), for whoever reads the samples afterwards.
    recorded = [s for s in load_samples() if (s["object"]["metadata"].get("namespace"), s["object"]["metadata"]
                                                .get("name")) == (namespace, "argo")]
    assert len(recorded) >= sum(seen.values()), (len(recorded), seen)
