"""Phases 4 and 5 of decide: the kstatus conditions and status.health, from the earlier phases' results. Pure.

- `conditions()` -> `Verdict`: Ready, Stalled, Reconciling, Available and Degraded (in that order, after the
  Optimized condition phase 1 set), the SLO's status.serving.metrics and its Events.
- `health_summary()` -> (status.health, Events): Healthy, Unhealthy or Unknown; lastCheckTime moves only when the state
  changes, so nothing is written while nothing changes.
"""
from __future__ import annotations

from dataclasses import dataclass

from modeldeploy.api import status as st
from modeldeploy.api.spec import ModelDeploymentSpec
from modeldeploy.api.status import EventType, Reason, event
from modeldeploy.controller import canary as cn
from modeldeploy.controller import slo as slomod
from modeldeploy.controller.decide.base import (SERVES, Conditions, HealthState, Observed,
                                                OptimizationState)
from modeldeploy.controller.decide.optimization import Optimization
from modeldeploy.controller.decide.serving import Outcome, Rollout, Serving
from modeldeploy.resources.deployment import ServingTarget

HEALTH_EVENTS = {HealthState.HEALTHY: Reason.HEALTH_HEALTHY, HealthState.UNHEALTHY: Reason.HEALTH_UNHEALTHY}


@dataclass(frozen=True)
class Verdict:
    """Phase 4: the new conditions and what the health summary needs of them."""
    conditions: list
    available: bool                    # enough ready replicas of the target, the model available
    lost: bool                         # a version that was good no longer has enough ready replicas
    metrics: dict | None               # status.serving.metrics (None without an SLO)
    events: tuple = ()


def conditions(spec: ModelDeploymentSpec, obs: Observed, opt: Optimization, s: Serving, o: Outcome,
               r: Rollout) -> Verdict:
    """Phase 4: every condition after Optimized, and the SLO verdict."""
    conds = Conditions(opt.conditions, obs.generation, obs.now)
    scaled_to_zero = spec.autoscaling is None and spec.serving.replicas == 0
    ready_reason, ready_message = _ready(spec, obs, opt, s, o, r, conds, scaled_to_zero)
    dep, health, minimum = obs.deployment, s.health, s.minimum
    available = o.target is not None and dep.exists and health.ready >= minimum and minimum > 0 \
        and obs.model_state in SERVES
    if available:
        conds.set(st.AVAILABLE, True, Reason.REPLICAS_READY, health.message)
    elif scaled_to_zero and dep.exists:
        conds.set(st.AVAILABLE, False, Reason.SCALED_TO_ZERO, "spec.serving.replicas is 0: nothing serves")
    elif o.target is None or not dep.exists:
        conds.set(st.AVAILABLE, False, ready_reason, f"no serving Deployment yet: {ready_message}")
    else:
        conds.set(st.AVAILABLE, False, health.reason if health.reason != Reason.REPLICAS_READY
                  else Reason.REPLICAS_NOT_READY, health.message)
    metrics, events = _slo(spec, obs, o.target)
    lost = r.model.get("lastGoodVersion") is not None and o.matches and r.complete and health.ready < minimum
    _degraded(conds, s, o, metrics, lost)
    return Verdict(conds.items, available, lost, metrics, events)


def _ready(spec: ModelDeploymentSpec, obs: Observed, opt: Optimization, s: Serving, o: Outcome, r: Rollout,
           conds: Conditions, scaled_to_zero: bool) -> tuple[str, str]:
    """Set Ready, Stalled and Reconciling; return Ready=False's reason and message (Available's, when no
    Deployment serves yet)."""
    target, stalled = o.target, o.stalled
    ready_reason, ready_message = _not_ready(spec, obs, opt, s, o, r)
    if s.canary is not None and s.canary.running and stalled is None:
        ready_reason = Reason.CANARY_HOLDING if s.canary.block["phase"] == cn.HOLDING else Reason.CANARY_PROGRESSING
        ready_message = f"canary version {s.requested.version}: {s.canary.block['message']}"
    # Ready only for the version asked for, or for the rolled-back one (then with Degraded and Stalled).
    ready = (stalled is None or o.rolled_back) and target is not None \
        and (target == s.requested or o.rolled_back) and (r.serving_ok or (scaled_to_zero and r.complete))
    if ready and scaled_to_zero:
        conds.set(st.READY, True, Reason.SCALED_TO_ZERO,
                  f"version {target.version} is deployed with spec.serving.replicas 0")
    elif ready:
        health = s.health
        extra = f" (rolled back from version {s.requested.version})" if o.rolled_back else ""
        conds.set(st.READY, True, health.reason if health.reason in (Reason.MODEL_AVAILABLE,) else
                  Reason.REPLICAS_READY, f"version {target.version} serves on {r.ready_target} ready "
                                         f"replicas{extra}: {health.message}")
    else:
        conds.set(st.READY, False, ready_reason, ready_message)
    if stalled is not None:
        conds.set(st.STALLED, True, stalled[0], stalled[1])
        conds.set(st.RECONCILING, False, stalled[0], "stalled: nothing more happens until the spec changes")
    else:
        conds.set(st.STALLED, False, Reason.AS_EXPECTED, "progressing normally")
        if ready:
            conds.set(st.RECONCILING, False, Reason.RECONCILED, "nothing in progress")
        else:
            conds.set(st.RECONCILING, True, ready_reason, ready_message)
    return ready_reason, ready_message


def _not_ready(spec: ModelDeploymentSpec, obs: Observed, opt: Optimization, s: Serving, o: Outcome, r: Rollout) \
        -> tuple[str, str]:
    """Reason and message of Ready=False (also Reconciling's while in progress): the most useful one."""
    target, dep, health = o.target, obs.deployment, s.health
    if o.stalled is not None:
        return o.stalled
    if opt.state == OptimizationState.WAIT:
        c = opt.optimized
        serving = f"; version {target.version} keeps serving" if target is not None else ""
        return c.get("reason") or Reason.OPTIMIZATION_PENDING, f"{c.get('message')}{serving}"
    if target is None:
        return Reason.OPTIMIZATION_PENDING, f"version {spec.model.version} is not available yet"
    if not o.matches:
        return Reason.ROLLOUT_IN_PROGRESS, f"rolling out version {target.version} ({target.image})"
    if not dep.rollout_complete:
        return (Reason.ROLLOUT_IN_PROGRESS if health.reason in (Reason.REPLICAS_READY, Reason.MODEL_AVAILABLE)
                else health.reason,
                f"rolling out version {target.version}: {dep.updated} updated, {dep.available} available of "
                f"{dep.replicas}; {health.message}")
    if r.ready_target < s.minimum:
        return (health.reason if health.reason not in (Reason.REPLICAS_READY, Reason.MODEL_AVAILABLE)
                else Reason.REPLICAS_NOT_READY, f"version {target.version}: {health.message}")
    if health.failing(target.version):
        return health.reason, health.message
    if dep.exists and health.model_state not in SERVES:
        return Reason.MODEL_NOT_AVAILABLE, health.message
    return Reason.ROLLOUT_IN_PROGRESS, f"waiting for version {target.version}: {health.message}"


def _degraded(conds: Conditions, s: Serving, o: Outcome, metrics: dict | None, lost: bool) -> None:
    """Set Degraded: stalled, failing pods, a good version lost, or the SLO violated."""
    health, failing_pods = s.health, s.health.failing()
    if o.stalled is not None:
        conds.set(st.DEGRADED, True, o.stalled[0], o.stalled[1])
    elif failing_pods:
        conds.set(st.DEGRADED, True, failing_pods[0].reason, health.message)
    elif lost:
        conds.set(st.DEGRADED, True, health.reason if health.reason != Reason.REPLICAS_READY
                  else Reason.MINIMUM_REPLICAS_UNAVAILABLE, health.message)
    elif (metrics or {}).get("slo") == slomod.VIOLATED:
        # Degraded only: Ready stays True (the version answers; kstatus reads Current, Argo CD Degraded).
        conds.set(st.DEGRADED, True, Reason.SLO_VIOLATED, metrics["message"])
    else:
        conds.set(st.DEGRADED, False, Reason.AS_EXPECTED, "no problems found")


def _slo(spec: ModelDeploymentSpec, obs: Observed, target: ServingTarget | None) -> tuple[dict | None, tuple]:
    """status.serving.metrics of the version the Deployment is set to (None without an SLO), and the Event of a
    verdict change: a Warning when it becomes Violated, a Normal one when it stops being Violated."""
    if spec.monitoring.slo is None or target is None:
        return None, ()
    stored = ((obs.status or {}).get("serving") or {}).get("metrics")
    block, transition = slomod.evaluate(spec.monitoring.slo, obs.serving_metrics, stored, target.version, obs.now)
    if transition is None or block is None:
        return block, ()
    old, new = transition
    if new == slomod.VIOLATED:
        return block, (event(EventType.WARNING, Reason.SLO_VIOLATED, block["message"]),)
    if old == slomod.VIOLATED:
        return block, (event(EventType.NORMAL, Reason.SLO_MET if new == slomod.MET else Reason.SLO_NO_VERDICT,
                             block["message"]),)
    return block, ()


def health_summary(obs: Observed, s: Serving, o: Outcome, r: Rollout, v: Verdict) -> tuple[dict, tuple]:
    """Phase 5: status.health and the Event of a change between Healthy and Unhealthy."""
    prev_health = dict((obs.status or {}).get("health") or {})
    dep, summary = obs.deployment, s.health
    if not dep.exists:
        state = HealthState.UNKNOWN
    elif summary.failing() or v.lost or (r.complete and not v.available and s.minimum > 0):
        state = HealthState.UNHEALTHY
    else:
        state = HealthState.HEALTHY if v.available else HealthState.UNKNOWN    # still coming up: not known yet
    block = {"state": state.value, "consecutiveFailures": o.failures,
             "message": summary.message if dep.exists else "no serving Deployment yet", "restarts": summary.restarts}
    if obs.model_state is not None:
        block["modelState"] = obs.model_state
    events = ()
    if prev_health.get("state") != state:
        block["lastCheckTime"] = block["lastTransitionTime"] = st.timestamp(obs.now)
        if prev_health.get("state") not in (None, HealthState.UNKNOWN) and state != HealthState.UNKNOWN:
            # Not for first sightings: a model coming up is no news.
            events = (event(EventType.NORMAL if state == HealthState.HEALTHY else EventType.WARNING,
                            HEALTH_EVENTS[state], block["message"]),)
    else:
        for key in ("lastCheckTime", "lastTransitionTime"):
            if prev_health.get(key):
                block[key] = prev_health[key]
    return block, events
