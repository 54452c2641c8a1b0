"""The Argo CD health check (Lua, run through lupa) on representative statuses and on every combination of our
conditions: it must agree with the conditions, with kstatus and with the operator's own health metric."""
from __future__ import annotations

import copy
import importlib.util
import itertools

import pytest
import yaml

from modeldeploy.api import status as st
from modeldeploy.controller import metrics
from tests import argo_health
from tests.argo_health import agreement_problems, lua_health
from tests.kstatus import check_kstatus

NOW = "2025-01-01T00:00:00Z"


def _gen_module():
    spec = importlib.util.spec_from_file_location("gen_argocd_health", argo_health.REPO / "hack" / "gen-argocd-health.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def md(conditions=(), generation=1, observed=1, status=True, **status_extra):
    conds: list = []
    for type_, value, reason, message in conditions:
        conds, _ = st.set_condition(conds, type_, value, reason, message, observed or 0, NOW)
    obj = {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
           "metadata": {"name": "digits", "namespace": "ml", "generation": generation},
           "spec": {"model": {"uri": "s3://models/digits/base", "version": 3}}}
    if status:
        obj["status"] = {"conditions": conds, "phase": st.phase(conds), **status_extra}
        if observed is not None:
            obj["status"]["observedGeneration"] = observed
    return obj


R = st.Reason
READY = ("Ready", True, R.REPLICAS_READY, "2/2 replicas ready, version 3 available")
ZERO = ("Ready", True, R.SCALED_TO_ZERO, "spec.serving.replicas is 0")
NOT_READY = ("Ready", False, R.ROLLOUT_IN_PROGRESS, "0/2 replicas of version 3 ready")
UNSCHEDULABLE = ("Ready", False, R.UNSCHEDULABLE,
                 "0/2 replicas ready: pod digits-7f9c Unschedulable: 0/4 nodes have enough nvidia.com/gpu")
RECONCILING = ("Reconciling", True, R.ROLLOUT_IN_PROGRESS, "rolling out version 3")
OPTIMIZING = ("Reconciling", True, R.JOB_RUNNING, "Job digits-opt-3-1a2b3c4d running")
IDLE = ("Reconciling", False, R.RECONCILED, "")
GATE = ("Stalled", True, R.ACCURACY_GATE_FAILED, "accuracy drop 0.05 exceeds maxAccuracyDrop 0.01")
INVALID = ("Stalled", True, R.INVALID_SPEC, "spec.autoscaling.maxReplicas: must be >= minReplicas")
NOT_STALLED = ("Stalled", False, R.AS_EXPECTED, "")
ROLLED_BACK = ("Degraded", True, R.ROLLED_BACK, "version 3 crash-looped; rolled back to version 2")
CRASHING = ("Degraded", True, R.CRASH_LOOP_BACK_OFF, "1/2 replicas ready: pod digits-5d8 CrashLoopBackOff")
NOT_DEGRADED = ("Degraded", False, R.AS_EXPECTED, "")

# (object, Argo status, a piece of the message): the situations users meet.
CASES = {
    "created-no-status": (md(status=False), "Progressing", "Waiting for the modeldeploy operator"),
    "empty-conditions": (md(), "Progressing", "Waiting for the modeldeploy operator"),
    "optimizing": (md([NOT_READY, OPTIMIZING, NOT_STALLED]), "Progressing", "Job digits-opt-3-1a2b3c4d running"),
    "rolling-out": (md([NOT_READY, RECONCILING, NOT_STALLED]), "Progressing", "RolloutInProgress: rolling out"),
    "unschedulable-gpu": (md([UNSCHEDULABLE, RECONCILING]), "Progressing", "rolling out version 3"),
    "ready": (md([READY, IDLE, NOT_STALLED, NOT_DEGRADED]), "Healthy", "ReplicasReady: 2/2 replicas ready"),
    "scaled-to-zero": (md([ZERO, IDLE, NOT_STALLED]), "Suspended", "ScaledToZero"),
    "gate-failed": (md([NOT_READY, IDLE, GATE]), "Degraded", "AccuracyGateFailed: accuracy drop 0.05"),
    "invalid-spec": (md([("Ready", False, R.INVALID_SPEC, "invalid spec"), IDLE, INVALID]), "Degraded",
                     "InvalidSpec: spec.autoscaling.maxReplicas"),
    "rolled-back": (md([READY, IDLE, GATE, ROLLED_BACK]), "Degraded", "AccuracyGateFailed"),
    "rolled-back-only-degraded": (md([READY, IDLE, ("Stalled", True, R.ROLLED_BACK, "version 3 rolled back"),
                                      ROLLED_BACK]), "Degraded", "RolledBack"),
    "crash-loop-recovering": (md([("Ready", False, R.CRASH_LOOP_BACK_OFF, "1/2 ready"), RECONCILING, CRASHING]),
                              "Degraded", "CrashLoopBackOff"),
    "stale-generation-ready": (md([READY, IDLE], generation=4, observed=3), "Progressing",
                               "observe generation 4 (observed 3)"),
    "stale-generation-stalled": (md([NOT_READY, IDLE, GATE], generation=4, observed=3), "Progressing",
                                 "generation 4"),
    "no-observed-generation": (md([READY], observed=None), "Progressing", "(observed none)"),
    "ready-false-nothing-else": (md([NOT_READY]), "Progressing", "0/2 replicas"),
    "no-ready-condition": (md([IDLE]), "Progressing", "Waiting for the Ready condition"),
    # Canary rollouts (controller/canary.py): in progress or holding reads Progressing, rolled back Degraded.
    "canary-in-progress": (md([("Ready", False, R.CANARY_PROGRESSING, "canary version 4: step 1/2 (weight 25%)"),
                               ("Reconciling", True, R.CANARY_PROGRESSING, "canary version 4: step 1/2"),
                               NOT_STALLED, NOT_DEGRADED]), "Progressing", "CanaryProgressing: canary version 4"),
    "canary-holding": (md([("Ready", False, R.CANARY_HOLDING, "canary version 4: not proven after 300 s"),
                           ("Reconciling", True, R.CANARY_HOLDING, "canary version 4: not proven"),
                           NOT_STALLED, NOT_DEGRADED]), "Progressing", "CanaryHolding"),
    "canary-rolled-back": (md([READY, IDLE, ("Stalled", True, R.ROLLED_BACK, "canary step 1/2: p99 412 ms > 250 ms"),
                               ("Degraded", True, R.ROLLED_BACK, "canary step 1/2: p99 412 ms > 250 ms")]),
                           "Degraded", "RolledBack: canary step 1/2: p99 412 ms"),
}


def test_configmap_embeds_the_lua_verbatim():
    gen = _gen_module()
    lua = gen.LUA.read_text()
    assert gen.YAML.read_text() == gen.render(lua), "run python3 hack/gen-argocd-health.py"
    cm = yaml.safe_load(gen.YAML.read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    assert cm["data"] == {"resource.customizations.health.modeldeploy.io_ModelDeployment": lua}


@pytest.mark.parametrize("case", list(CASES))
def test_representative_statuses(case):
    obj, expected, message = CASES[case]
    status, got_message = lua_health(obj)
    assert (status, message in got_message) == (expected, True), (status, got_message)
    assert metrics.health_state(obj) == (status, got_message)


@pytest.mark.parametrize("case", [c for c in CASES if c not in ("ready-false-nothing-else", "no-ready-condition")])
def test_representative_statuses_agree_with_conditions(case):
    obj = CASES[case][0]
    assert agreement_problems(obj, lua_health(obj)[0]) == []


def _combinations():
    options = {
        "Ready": [None, READY, NOT_READY, ZERO, ("Ready", "Unknown", R.REPLICAS_NOT_READY, "no pods yet")],
        "Reconciling": [None, RECONCILING, IDLE],
        "Stalled": [None, GATE, NOT_STALLED],
        "Degraded": [None, ROLLED_BACK, NOT_DEGRADED],
    }
    for combo in itertools.product(*options.values()):
        for generation, observed in ((2, 2), (3, 2)):
            yield md([c for c in combo if c], generation=generation, observed=observed)


def test_every_combination_of_conditions():
    """Lua == the operator's health metric on every combination; on every status that keeps the kstatus rules,
    the Argo status never contradicts the conditions or kstatus."""
    seen, honest = set(), 0
    for obj in _combinations():
        status, message = lua_health(obj)
        seen.add(status)
        assert metrics.health_state(obj) == (status, message), obj["status"]
        if not check_kstatus(obj):       # dishonest statuses are the checker's job (tests/kstatus.py)
            honest += 1
            assert agreement_problems(obj, status) == [], (status, message, obj["status"])
    assert seen == {"Healthy", "Progressing", "Degraded", "Suspended"}
    assert honest >= 100, honest


def test_agreement_catches_a_lying_health_check():
    healthy_obj, degraded_obj = CASES["ready"][0], CASES["gate-failed"][0]
    assert agreement_problems(degraded_obj, "Healthy")
    assert agreement_problems(healthy_obj, "Degraded")
    assert agreement_problems(healthy_obj, "Progressing")
    assert agreement_problems(CASES["stale-generation-ready"][0], "Healthy")
    assert agreement_problems(healthy_obj, "Missing")


def test_runs_without_the_libraries_argo_withholds():
    # The sandbox in lua_health removes os/io/require/load; a script using them would fail here as in Argo CD.
    obj = copy.deepcopy(CASES["ready"][0])
    assert lua_health(obj)[0] == "Healthy"
    rt = argo_health.lua51.LuaRuntime()
    rt.globals().os = None
    with pytest.raises(argo_health.lua51.LuaError):
        rt.execute("return os.time()")


def test_numbers_as_argo_passes_them():
    # Argo CD hands JSON numbers to Lua as floats: generation 3.0 must still equal observedGeneration 3.
    obj = copy.deepcopy(CASES["ready"][0])
    obj["metadata"]["generation"] = 1.0
    assert lua_health(obj)[0] == "Healthy"


def test_the_check_every_live_read_runs_passes_agreement_and_names_a_disagreement(monkeypatch):
    """argo_health.assert_argo_health (tests.fixtures.operator.get_md runs it on every status a test reads)."""
    ready = md([READY, IDLE, NOT_STALLED, NOT_DEGRADED])
    assert argo_health.assert_argo_health(ready) == "Healthy"
    assert argo_health.assert_argo_health(md([READY, IDLE], generation=2, observed=1)) == "Progressing"
    assert argo_health.assert_argo_health(md(status=False)) == "Progressing"
    # The health metric saying something else than the Lua fails it, naming the object.
    monkeypatch.setattr(metrics, "health_state", lambda obj: ("Degraded", "made up"))
    with pytest.raises(AssertionError, match=r"ml/digits generation 1:\n.*Lua says Healthy .* health metric says"):
        argo_health.assert_argo_health(ready)
    monkeypatch.undo()
    # A Lua answer that contradicts the conditions fails it too.
    monkeypatch.setattr(argo_health, "lua_health", lambda obj: ("Healthy", ""))
    monkeypatch.setattr(metrics, "health_state", lambda obj: ("Healthy", ""))
    with pytest.raises(AssertionError, match="Healthy without Ready=True"):
        argo_health.assert_argo_health(md([NOT_READY, RECONCILING]))
