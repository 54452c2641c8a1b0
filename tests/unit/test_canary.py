"""Canary decisions (controller/canary.py) as tables, and whole canary rollouts through decide(): started,
advanced, held without traffic, promoted, rolled back on the SLO and on the margins; kstatus and the Argo CD
health check read each status the same way (pure, no cluster)."""
from __future__ import annotations

import dataclasses

import pytest

from modeldeploy.api import spec as specmod
from modeldeploy.controller import canary as cn
from modeldeploy.controller import decide as dc
from modeldeploy.controller import slo
from modeldeploy.controller.observe import deployment_view
from modeldeploy.resources.deployment import ServingTarget
from tests.argo_health import agreement_problems, lua_health
from tests.kstatus import check_kstatus, kstatus_status
from tests.unit.test_reconcile_decide import cond, deployment, pod

T0, T1, T2, T3 = "2025-01-01T00:00:00Z", "2025-01-01T00:00:30Z", "2025-01-01T00:01:00Z", "2025-01-01T00:02:00Z"
SLO = {"maxP99LatencyMs": 250, "maxErrorRatio": 0.05, "minRequestsPerSecond": 1, "windowSeconds": 60}
STEPS = [{"weight": 25, "durationSeconds": 60}, {"weight": 50, "durationSeconds": 60}]
IMAGE = "tensorflow/serving:2.21.0"


def md(version=4, strategy="canary", **spec):
    body = {"model": {"uri": "s3://models/digits/base", "version": version}, "serving": {"replicas": 4},
            "monitoring": {"slo": SLO, "failureThreshold": 2},
            "rollout": {"strategy": strategy, "steps": STEPS}}
    body.update(spec)
    return specmod.parse({"metadata": {"name": "digits", "namespace": "ml"}, "spec": body})


def fig(p99=100.0, err=0.0, rps=10.0, window=60.0, version=4) -> slo.Figures:
    return slo.Figures(requests_per_second=rps, error_ratio=err, p50_ms=20.0, p99_ms=p99, window_seconds=window,
                       pods=1, requests=rps * window, version=version)


RULES = specmod.RolloutSpec(strategy="canary", steps=tuple(specmod.CanaryStep(**{"weight": s["weight"],
                                                                                 "duration_seconds": 60})
                                                            for s in STEPS))
SLOS = specmod.SLOSpec(max_p99_latency_ms=250, max_error_ratio=0.05, window_seconds=60)


@pytest.mark.parametrize("index, now, canary, stable, action, words", [
    (0, T1, fig(), fig(version=3), cn.STAY, "until 2025-01-01T00:01:00Z: SLO met and no worse than stable"),
    (0, T2, fig(), fig(version=3), cn.ADVANCE, "step 2/2 (weight 50%) until 2025-01-01T00:02:00Z"),
    (1, T3, fig(), fig(version=3), cn.PROMOTE, "all 2 steps passed"),
    (0, T2, fig(rps=0.5), fig(version=3), cn.HOLD, "not proven after 60 s (no verdict: below 1 requests/s)"),
    (0, T2, fig(window=30), fig(version=3), cn.STAY, "60 s passed: SLO met so far, over 30 s of a 60 s window"),
    (0, T1, fig(p99=400), fig(version=3), cn.ROLLBACK, "p99 400.0 ms > 250 ms"),
    (0, T1, fig(err=0.2), None, cn.ROLLBACK, "error ratio 0.2000 > 0.05"),
    (0, T1, fig(p99=200), fig(p99=100, version=3), cn.ROLLBACK, "p99 200.0 ms > 1.2 x stable p99 100.0 ms"),
    (0, T1, fig(err=0.03), fig(err=0.01, version=3), cn.ROLLBACK, "error ratio 0.0300 > stable 0.0100 + 0.01"),
    # The margins need a stable verdict: a stable version below minRequestsPerSecond is no yardstick.
    (0, T1, fig(p99=200), fig(p99=100, rps=0.2, version=3), cn.STAY, "SLO met and no worse than stable"),
    (0, T1, fig(p99=119), fig(p99=100, version=3), cn.STAY, "SLO met"),
    # Milliseconds apart is noise, not a worse model: the ratio counts only above 25 ms of difference.
    (0, T1, fig(p99=11.8), fig(p99=5.4, version=3), cn.STAY, "SLO met and no worse than stable"),
    (0, T1, fig(p99=40), fig(p99=10, version=3), cn.ROLLBACK, "p99 40.0 ms > 1.2 x stable p99 10.0 ms"),
    # A new pod's first slow requests are the whole p99 of its first seconds: no rollback before half a window.
    (0, T1, fig(p99=400, window=2), fig(version=3), cn.STAY,
     "p99 400.0 ms > 250 ms so far, over 2 s; judged once 30 s of the 60 s window are covered"),
    (0, T1, fig(p99=400, window=30), fig(version=3), cn.ROLLBACK, "p99 400.0 ms > 250 ms"),
])
def test_next_step(index, now, canary, stable, action, words):
    step = cn.next_step(RULES, SLOS, index, T0 if index == 0 else T1, now, canary, stable)
    assert step.action == action and words in step.message


def test_next_step_without_figures_stays_and_keeps_the_stored_message():
    assert cn.next_step(RULES, SLOS, 0, T0, T3, None, fig()) == cn.Step(cn.STAY, 0, T0, None)


def test_next_step_rolls_back_on_a_failure_before_any_figure():
    step = cn.next_step(RULES, SLOS, 0, T0, T1, None, None, ("CanaryFailing", "pods crash"))
    assert (step.action, step.reason) == (cn.ROLLBACK, "CanaryFailing")
    assert step.message == "step 1/2 (weight 25%): pods crash"


def test_reasons_name_what_failed():
    assert cn.compare(RULES, SLOS, fig(p99=400), None).reason == "CanarySLOViolated"
    assert cn.compare(RULES, SLOS, fig(p99=200), fig(p99=100, version=3)).reason == "CanaryWorseThanStable"


# --- whole rollouts through decide() ----------------------------------------------------------------------------

def v3_status():
    """The status of version 3 serving on 4 ready replicas (the canary's stable version)."""
    spec = md(version=3)
    obs = dict(deployment=deployment_view(deployment(spec)), pods=tuple(pod(f"s{i}", 3) for i in range(4)))
    first = dc.decide(spec, dc.Observed(generation=1, status={}, now=T0, **obs))
    return dc.decide(spec, dc.Observed(generation=1, status=first.status, now=T0, **obs)).status


def canary_pod(name, version=4, **kw):
    p = pod(name, version, **kw)
    p["metadata"]["labels"]["modeldeploy.io/track"] = "canary"
    return p


def run(status, now, canary=None, stable=None, generation=2, spec=None, interval=True, pods=(), replicas=3):
    spec = spec or md()
    v3 = ServingTarget(3, IMAGE, "s3://models/digits/base")
    obs = dc.Observed(generation=generation, status=status, now=now, interval_check=interval,
                      deployment=deployment_view(deployment(spec, v3, replicas=replicas)),
                      pods=tuple(pod(f"s{i}", 3) for i in range(replicas)) + tuple(pods),
                      serving_metrics=stable, canary_metrics=canary)
    plan = dc.decide(spec, obs)
    body = {"kind": "ModelDeployment", "metadata": {"name": "digits", "generation": generation},
            "status": plan.status}
    assert check_kstatus(body, settled=True) == []
    health, _ = lua_health(body)
    assert agreement_problems(body, health) == []
    again = dc.decide(spec, dataclasses.replace(obs, status=plan.status, interval_check=False, canary_metrics=None,
                                                serving_metrics=None))
    if not plan.rolled_back:
        assert again.status == plan.status and again.events == [], "a pass without figures must change nothing"
    return plan, health, kstatus_status(body)[0]


def test_a_good_canary_is_promoted_through_its_steps():
    plan, health, ks = run(v3_status(), T0)
    assert plan.target.version == 3 and plan.canary.running and plan.canary.target.version == 4
    assert (plan.canary.split.canary, plan.canary.split.stable) == (1, 3)
    assert plan.status["rollout"] == {
        "strategy": "canary", "phase": "Progressing", "step": 1, "steps": 2, "weight": 25, "canaryVersion": 4,
        "stableVersion": 3, "stepStartTime": T0, "failedChecks": 0, "canaryReplicas": 1, "stableReplicas": 3,
        "message": "step 1/2 (weight 25%): waiting for the canary's figures"}
    assert cond(plan, "Ready")[:2] == ("False", "CanaryProgressing") and cond(plan, "Reconciling")[0] == "True"
    assert (health, ks) == ("Progressing", "InProgress")
    assert [e[1] for e in plan.events] == ["CanaryStarted"]
    assert plan.last_good.version == 3          # kept as the rollback target

    plan, _, _ = run(plan.status, T2, canary=fig(), stable=fig(version=3))
    assert plan.status["rollout"]["step"] == 2 and plan.status["rollout"]["stepStartTime"] == T2
    assert (plan.canary.split.canary, plan.canary.split.stable) == (2, 2)
    assert [e[1] for e in plan.events] == ["CanaryStepAdvanced"]

    plan, health, _ = run(plan.status, T3, canary=fig(), stable=fig(version=3))
    assert plan.status["rollout"]["phase"] == "Promoted" and not plan.canary.running
    assert plan.target.version == 4             # the serving Deployment rolls to the canary's version
    assert [e[1] for e in plan.events] == ["CanaryPromoted", "RolloutStarted"]
    assert cond(plan, "Reconciling")[0] == "True" and health == "Progressing"


@pytest.mark.parametrize("canary, reason, words", [
    (fig(p99=400), "CanarySLOViolated", "p99 400.0 ms > 250 ms"),
    (fig(err=0.2), "CanarySLOViolated", "error ratio 0.2000 > 0.05"),
    (fig(p99=200), "CanaryWorseThanStable", "p99 200.0 ms > 1.2 x stable p99 100.0 ms"),
])
def test_a_bad_canary_is_rolled_back_with_the_figures(canary, reason, words):
    started, _, _ = run(v3_status(), T0)
    plan, health, ks = run(started.status, T1, canary=canary, stable=fig(version=3))
    assert plan.rolled_back and plan.target.version == 3 and not plan.canary.running
    status, creason, message = cond(plan, "Stalled")
    assert (status, creason) == ("True", "RolledBack") and words in message and reason in message
    assert "rolled back to version 3" in message and "stable: 10.00 requests/s" in message
    assert cond(plan, "Degraded")[0] == "True" and (health, ks) == ("Degraded", "Failed")
    assert plan.status["rollout"]["phase"] == "RolledBack" and "canaryReplicas" not in plan.status["rollout"]
    assert plan.status["rollback"]["lastReason"] == reason and plan.status["model"]["failedVersion"] == 4
    assert [e[1] for e in plan.events] == ["RolledBack"]
    # Latched for this generation: no canary again, status.rollout kept as it is.
    later, _, _ = run(plan.status, T3, canary=fig(), stable=fig(version=3), replicas=4)   # scaled back
    assert later.canary is None and later.status["rollout"] == plan.status["rollout"] and later.events == []


def test_no_traffic_holds_the_step_and_never_promotes():
    started, _, _ = run(v3_status(), T0)
    plan, health, _ = run(started.status, T2, canary=fig(rps=0.1), stable=fig(rps=0.1, version=3))
    assert plan.status["rollout"]["phase"] == "Holding" and plan.canary.running
    assert cond(plan, "Ready")[:2] == ("False", "CanaryHolding") and health == "Progressing"
    assert "not proven after 60 s" in plan.status["rollout"]["message"]
    assert [e[1] for e in plan.events] == ["CanaryHolding"]
    held, _, _ = run(plan.status, T3, canary=fig(rps=0.2), stable=fig(version=3))
    assert held.status["rollout"]["phase"] == "Holding" and held.events == []      # Events on transitions only
    assert held.status["rollout"] == plan.status["rollout"]     # a long hold: no write per interval
    moved, _, _ = run(held.status, T3, canary=fig(), stable=fig(version=3))
    assert moved.status["rollout"]["step"] == 2 and moved.status["rollout"]["phase"] == "Progressing"


def test_crashing_canary_pods_roll_back_after_the_failure_threshold():
    started, _, _ = run(v3_status(), T0)
    crash = (canary_pod("c0", ready=False, waiting="CrashLoopBackOff", restarts=3),)
    once, _, _ = run(started.status, T1, pods=crash)
    assert once.status["rollout"]["failedChecks"] == 1 and not once.rolled_back
    assert cond(once, "Degraded")[0] == "False"         # the stable version's health is its own pods'
    twice, _, _ = run(once.status, T1, pods=crash)
    assert twice.rolled_back and "CanaryFailing" in cond(twice, "Stalled")[2]


def test_a_new_version_mid_canary_restarts_the_steps():
    started, _, _ = run(v3_status(), T0)
    plan, _, _ = run(started.status, T2, spec=md(version=5))
    assert plan.status["rollout"]["canaryVersion"] == 5 and plan.status["rollout"]["step"] == 1
    assert plan.status["rollout"]["stepStartTime"] == T2


def test_going_back_to_the_stable_version_cancels_the_canary():
    started, _, _ = run(v3_status(), T0)
    plan, _, _ = run(started.status, T1, spec=md(version=3), replicas=4)
    assert plan.canary is None and plan.status["rollout"]["phase"] == "Cancelled"
    assert [e[1] for e in plan.events] == ["CanaryCancelled"]


def test_rolling_strategy_is_unchanged():
    plan, _, _ = run(v3_status(), T0, spec=md(strategy="rolling"))
    assert plan.canary is None and "rollout" not in plan.status and plan.target.version == 4


def test_autoscaled_canary_adds_replicas_on_top_of_the_hpa():
    spec = md(autoscaling={"minReplicas": 2, "maxReplicas": 8})
    plan, _, _ = run(v3_status(), T0, spec=spec)
    assert (plan.canary.split.canary, plan.canary.split.stable) == (1, None)
    assert "stableReplicas" not in plan.status["rollout"]


# --- the reconciler's writes for a plan ---------------------------------------------------------------------------

class _Kube:
    """Records what children.write applies and deletes."""

    def __init__(self):
        self.applied, self.deleted = [], []

    def get(self, kind, namespace, name):
        return None

    def create(self, desired, owner):
        self.ensure(desired, owner, None)
        return "created", desired

    def ensure(self, desired, owner, live):
        self.applied.append((desired["kind"], desired["metadata"]["name"], (desired.get("spec") or {}).get("replicas")))
        return "updated", desired

    def delete(self, kind, live):
        self.deleted.append((kind, live["metadata"]["name"]))

    def crd_exists(self, *_):
        return False


def _write(plan, spec, live_canary=None):
    from types import SimpleNamespace

    from modeldeploy.controller import children
    from modeldeploy.controller.context import Result
    from modeldeploy.resources.common import DEFAULT_OPERATOR_IMAGES
    kube = _Kube()
    ctx = SimpleNamespace(kube=kube, egress_cidrs=None, tool_images=DEFAULT_OPERATOR_IMAGES, status_schema=None,
                          unwatched={})
    owner = {"uid": "u1"}
    kids = {kind: [] for kind in ("Service", "Deployment", "HorizontalPodAutoscaler",
                                  "PodDisruptionBudget", "NetworkPolicy")}
    if live_canary is not None:
        kids["Deployment"].append(live_canary)
    children.write(ctx, spec, plan, owner, kids, Result())
    return kube


def test_the_reconciler_runs_the_canary_beside_the_stable_share_and_removes_it_after():
    started, _, _ = run(v3_status(), T0)
    kube = _write(started, md())
    deployments = [a for a in kube.applied if a[0] == "Deployment"]
    assert deployments == [("Deployment", "digits", 3), ("Deployment", "digits-canary", 1)]
    live = {"metadata": {"name": "digits-canary", "ownerReferences": [{"uid": "u1", "controller": True}]}}
    promoted, _, _ = run(run(started.status, T2, canary=fig(), stable=fig(version=3))[0].status, T3,
                         canary=fig(), stable=fig(version=3))
    kube = _write(promoted, md(), live_canary=live)
    assert [a for a in kube.applied if a[0] == "Deployment"] == [("Deployment", "digits", 4)]
    assert kube.deleted == [("Deployment", "digits-canary")]
