"""The reconciler's decisions as one pure function: what is observed in, what to do and what status to write out.

`decide(spec, obs)` returns a `Plan`: whether to create the optimizer Job, which `ServingTarget` the serving
Deployment must run (None: leave serving alone), whether this is a rollback, the Events of this transition, and
the complete new status. Level-based: the same observation always gives the same plan, and a plan whose status
equals the stored one means "nothing to write".

State the decisions keep in status (so a restarted operator decides the same way):
- `status.optimization` {job, version, hash, uri, figures...}: `uri` is set only once version N is published.
- a failure "latch" per generation: Optimized=False with a failure reason, or Stalled=True reason RolledBack,
  whose observedGeneration equals metadata.generation, means "this spec already failed: do not retry it".
  Any spec change bumps the generation and clears it.
- `status.model.lastGoodVersion` (+ lastGoodImage/lastGoodUri when the CRD has them): the rollback target.
- `status.health.consecutiveFailures`: failed checks of the version rolling out (interval checks only).
- `status.serving.metrics` {slo, sloTransitionTime, figures}: the SLO verdict and when it last changed, which
  the hysteresis needs (controller/slo.py); the figures themselves are measured in memory by the monitor.
- `status.rollout` {phase, step, stepStartTime, canaryVersion, failedChecks, ...}: a canary's progress
  (controller/canary.py decides it; spec.rollout.strategy canary only). While a canary runs, the serving
  Deployment keeps the last good version and `Plan.canary` says which canary Deployment runs beside it.

The phases, each a pure function returning a frozen result the next ones read:
1. optimization.py `optimization()` -> `Optimization`: state (OptimizationState), status.optimization, Optimized,
   the runtime (tuning.choose_runtime, once per pass);
2. serving.py `serving_target()` -> `Serving`: the target the serving Deployment runs, the canary, pod health;
3. serving.py `failures()` -> `Outcome`: rollback or Stalled; `rollout()` -> `Rollout`: status.model, last good;
4. conditions.py `conditions()` -> `Verdict`: Ready, Stalled, Reconciling, Available, Degraded, the SLO;
5. conditions.py `health_summary()` -> status.health;
then `decide()` assembles the status and the `Plan`. base.py holds what they share (Observed, Plan, the enums).
"""
from __future__ import annotations

import dataclasses

from modeldeploy.api import names
from modeldeploy.api import status as st
from modeldeploy.api.spec import ModelDeploymentSpec
from modeldeploy.api.status import Reason
from modeldeploy.controller import canary as cn
from modeldeploy.controller import tuning
from modeldeploy.controller.decide.base import (Conditions, HealthState, Observed, OptimizationState, Plan, cond,
                                                last_good_target, minimum_ready)
from modeldeploy.controller.decide.conditions import Verdict, conditions, health_summary
from modeldeploy.controller.decide.optimization import Optimization, optimization
from modeldeploy.controller.decide.serving import Outcome, Rollout, Serving, failures, rollout, serving_target
from modeldeploy.resources.deployment import target_from_spec

__all__ = ["Observed", "Plan", "OptimizationState", "HealthState", "decide", "last_good_target", "minimum_ready",
           "condition_reason", "stalled_status", "invalid_spec_status"]


def decide(spec: ModelDeploymentSpec, obs: Observed) -> Plan:
    """The whole decision for one reconcile: the phases in order (see the module docstring)."""
    opt = optimization(spec, obs)
    requested = dataclasses.replace(target_from_spec(spec), runtime=opt.runtime.name)
    s = serving_target(spec, obs, opt, requested)
    o = failures(spec, obs, s, opt)
    r = rollout(spec, obs, s, o, opt)
    v = conditions(spec, obs, opt, s, o, r)
    health, health_events = health_summary(obs, s, o, r, v)
    if s.canary is not None:
        rollout_block, settle_events = s.canary.block, ()
    else:
        rollout_block, settle_events = cn.settle((obs.status or {}).get("rollout"), requested)
    serving, serving_block = None, None
    if o.target is not None:
        batching, batching_status = tuning.serving_batching(spec, opt.record, o.target.runtime)
        serving = dataclasses.replace(spec, serving=dataclasses.replace(spec.serving, batching=batching))
        serving_block = _serving_block(spec, obs, s, o, v, opt.runtime.reason, batching_status)
    return Plan(status=_status(spec, obs, opt, r, v, serving_block, o.rollback, health, rollout_block),
                create_job=opt.create_job, target=o.target, serving=serving, last_good=r.last_good,
                rolled_back=o.rolled_back_now, canary=s.canary,
                events=[*opt.events, *(s.canary.events if s.canary is not None else ()), *o.events, *r.events,
                        *v.events, *health_events, *settle_events])


def _status(spec: ModelDeploymentSpec, obs: Observed, opt: Optimization, r: Rollout, v: Verdict,
            serving: dict | None, rollback: dict, health: dict, rollout_block: dict | None) -> dict:
    """The new status, from the phases' results; optional blocks only when there is something to say."""
    status = {"observedGeneration": obs.generation, "phase": st.phase(v.conditions), "conditions": v.conditions,
              "selector": names.selector_string(spec.name), "model": r.model}
    if opt.record:
        status["optimization"] = opt.record
    if serving is not None:
        status["serving"] = serving
    if rollback:
        status["rollback"] = rollback
    status["health"] = health
    if rollout_block:
        status["rollout"] = rollout_block
    return status


def _serving_block(spec: ModelDeploymentSpec, obs: Observed, s: Serving, o: Outcome, v: Verdict,
                   runtime_reason: str, batching_status: dict | None) -> dict:
    """status.serving: the Deployment's target and replica counts, the endpoints, batching and SLO figures."""
    target, dep = o.target, obs.deployment
    block = {
        "deployment": names.serving_name(spec.name), "service": names.serving_name(spec.name),
        "image": target.image, "version": target.version, "runtime": target.runtime,
        "runtimeReason": runtime_reason if target == s.requested else
        f"version {target.version} is served as it was last good ({target.runtime})",
        "replicas": dep.status_replicas,
        "readyReplicas": dep.ready, "updatedReplicas": dep.updated, "availableReplicas": dep.available,
        "restUrl": names.rest_url(spec.name, spec.namespace, spec.model.name),
        "grpcAddress": names.grpc_address(spec.name, spec.namespace)}
    if batching_status:
        block["batching"] = batching_status
    if v.metrics:
        block["metrics"] = v.metrics
    return block


def condition_reason(status: dict | None, type_: str) -> str | None:
    """The reason of condition `type_` in `status` when it is True."""
    c = cond((status or {}).get("conditions"), type_)
    return c.get("reason") if c.get("status") == "True" else None


def stalled_status(status: dict, generation: int, reason: str, message: str, now: str, prev: dict | None = None) \
        -> dict:
    """`status` (what decide planned) with Stalled=True `reason`: the children could not be written (a name
    taken by an object this ModelDeployment does not control, or a child the API server refused); what already
    serves is left as it is. decide planned these four conditions without knowing of the failure (Stalled=False
    at `now`): they start from `prev`'s, so a retry that fails the same way changes nothing and writes nothing."""
    stall = (st.READY, st.STALLED, st.RECONCILING, st.DEGRADED)
    before = {c.get("type"): c for c in (prev or {}).get("conditions") or () if c.get("type") in stall}
    seeded = [before.pop(c.get("type"), c) for c in status.get("conditions") or ()] + list(before.values())
    conds = Conditions(seeded, generation, now)
    conds.set(st.READY, False, reason, message)
    conds.set(st.STALLED, True, reason, message)
    conds.set(st.RECONCILING, False, reason, "stalled: nothing more happens until the cause is fixed")
    conds.set(st.DEGRADED, True, reason, message)
    return dict(status, conditions=conds.items, phase=st.phase(conds.items))


def invalid_spec_status(prev: dict, generation: int, error: Exception, now: str) -> dict:
    """Status for a spec that cannot be parsed: Stalled=True InvalidSpec; children and figures left alone."""
    conds = Conditions((prev or {}).get("conditions"), generation, now)
    message = f"{error}; fix the spec and apply it again (the children are left as they are)"
    conds.set(st.READY, False, Reason.INVALID_SPEC, message)
    conds.set(st.STALLED, True, Reason.INVALID_SPEC, message)
    conds.set(st.RECONCILING, False, Reason.INVALID_SPEC, "stalled: nothing more happens until the spec changes")
    conds.set(st.DEGRADED, True, Reason.INVALID_SPEC, message)
    status = {k: v for k, v in (prev or {}).items() if k not in ("kopf",)}
    status.update(observedGeneration=generation, conditions=conds.items, phase=st.phase(conds.items))
    return status
