"""Phases 2 and 3 of decide: which version the serving Deployment runs, and what a failed rollout leads to. Pure.

- `serving_target()` -> `Serving`: the target (the requested version, the last good one while a canary runs or
  after a rollback, else what serves now), the canary's plan (controller/canary.py), and the health of the
  target's pods with the count of failed checks.
- `failures()` -> `Outcome`: a failed rollout (progress deadline, failing pods, a failed canary) rolls back to the
  last good version or stalls; a failed optimization stalls too. Carries status.rollback and the Events.
- `rollout()` -> `Rollout`: the bookkeeping of the target's rollout: complete, ready, the new last good version
  and status.model.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from modeldeploy.api import status as st
from modeldeploy.api.spec import ModelDeploymentSpec
from modeldeploy.api.status import EventType, Reason, event
from modeldeploy.controller import canary as cn
from modeldeploy.controller import health as hl
from modeldeploy.controller.decide.base import (SERVES, Observed, OptimizationState, cond, last_good_target, latched,
                                                minimum_ready, target_from_status)
from modeldeploy.controller.decide.optimization import Optimization
from modeldeploy.controller.observe import DeploymentView, is_ready_pod_of
from modeldeploy.resources.deployment import ServingTarget


@dataclass(frozen=True)
class Serving:
    """Phase 2: the target the serving Deployment is set to (before a rollback of this pass), and how it fares."""
    requested: ServingTarget
    last_good: ServingTarget | None
    current: ServingTarget | None      # what serves now: the Deployment's target, else status.serving's
    target: ServingTarget | None       # None: leave serving alone (nothing published yet)
    latched_rollback: bool             # this generation was rolled back by an earlier pass
    new_version: bool                  # the requested version differs from the last good one
    rolling: bool                      # the target has not been good once: its failure is a failed rollout
    canary: cn.CanaryPlan | None
    minimum: int                       # ready replicas the serving Deployment needs
    pods: tuple                        # the stable track's serving pods
    health: hl.Health
    matches: bool                      # the Deployment runs the target
    failures: int                      # consecutive failed checks of the target


@dataclass(frozen=True)
class Outcome:
    """Phase 3: the target after a rollback of this pass, and the failure that stalls progress, if any."""
    target: ServingTarget | None
    matches: bool
    failures: int
    failure: tuple | None              # (reason, message) of a failed rollout
    stalled: tuple | None              # (reason, message) of Stalled=True
    rolled_back: bool                  # serving the last good version after a rollback (this pass or earlier)
    rolled_back_now: bool              # the rollback happens in this pass
    rollout_failed: bool               # status.model.failedVersion is the requested version
    rollback: dict                     # status.rollback
    events: tuple = ()


@dataclass(frozen=True)
class Rollout:
    """The target's rollout after phase 3: status.model, the new last good version and the Events."""
    complete: bool                     # the Deployment runs the target on every replica
    ready_target: int                  # ready pods of the target
    serving_ok: bool                   # complete, enough ready pods, none failing, the model available
    last_good: ServingTarget | None
    model: dict                        # status.model
    events: tuple = ()


def serving_target(spec: ModelDeploymentSpec, obs: Observed, opt: Optimization, requested: ServingTarget) \
        -> Serving:
    """Phase 2: the target, the canary beside it, and the health of the target's pods."""
    prev = obs.status or {}
    last_good = last_good_target(spec, prev, obs.recorded_last_good)
    rolled_back = bool(latched(prev.get("conditions"), st.STALLED, (Reason.ROLLED_BACK,), obs.generation, "True"))
    current = obs.deployment.target or target_from_status(prev)
    if rolled_back and last_good is not None:
        target = last_good
    elif opt.state in (OptimizationState.NONE, OptimizationState.PUBLISHED):
        target, rolled_back = requested, False
    else:
        target, rolled_back = current, False
    # A target is "rolling out" until it has been good once: only then can its failure mean a failed rollout.
    new_version = (target == requested and last_good is not None
                   and (last_good.version, last_good.image, last_good.runtime)
                   != (requested.version, requested.image, requested.runtime))
    canary = _canary(spec, obs, prev, requested, last_good, new_version and target == requested)
    if canary is not None and not canary.promote:
        target = last_good        # the serving Deployment keeps the last good version while the canary runs
    rolling = target == requested and (last_good is None or new_version)
    minimum = minimum_ready(spec)
    if canary is not None and not canary.promote and canary.split.stable is not None:
        # The canary runs the rest of spec.serving.replicas (in a rollback's pass too: the stable Deployment
        # grows back only once this plan is applied).
        minimum = canary.split.stable
    pods, _ = cn.by_track(obs.pods)
    dep = obs.deployment
    health = hl.summarize(pods, ready=dep.ready, desired=dep.replicas, minimum=minimum, model_state=obs.model_state,
                          model_message=obs.model_message)
    matches = target is not None and dep.exists and dep.target == target
    return Serving(requested, last_good, current, target, rolled_back, new_version, rolling, canary, minimum,
                   tuple(pods), health, matches, _failed_checks(obs, prev, target, health, matches))


def _failed_checks(obs: Observed, prev: dict, target: ServingTarget | None, health: hl.Health, matches: bool) -> int:
    """Failed checks of the version rolling out count only on scheduled checks, and restart with a new target."""
    failures = int((prev.get("health") or {}).get("consecutiveFailures") or 0)
    if target is None or target != target_from_status(prev):
        failures = 0
    if obs.interval_check and target is not None:
        # The model probe reads ready pods of the target only, so a failed model state is the target's.
        failing = health.failing(target.version) or health.model_failed
        failures = failures + 1 if matches and failing else 0
    return failures


def _canary(spec: ModelDeploymentSpec, obs: Observed, prev: dict, requested: ServingTarget,
            last_good: ServingTarget | None, new_version: bool) -> cn.CanaryPlan | None:
    """The canary's plan when spec.rollout.strategy canary rolls out a new version beside the last good one
    (the first version of an object rolls out plainly: there is nothing to compare it with)."""
    if spec.rollout.strategy != "canary" or not new_version or last_good is None:
        return None
    _, canary_pods = cn.by_track(obs.pods)
    dep = obs.canary_deployment
    failing = hl.summarize(canary_pods, ready=dep.ready, desired=dep.replicas, minimum=0).failing(requested.version)
    return cn.progress(spec, prev.get("rollout"), requested, last_good, now=obs.now,
                       stable_replicas=obs.deployment.replicas, canary_dep=dep, failing=failing,
                       interval_check=obs.interval_check, canary=obs.canary_metrics,
                       stable_figures=obs.serving_metrics)


def _rollout_failure(spec: ModelDeploymentSpec, dep: DeploymentView, health: hl.Health, target: ServingTarget,
                     failures: int) -> tuple[str, str] | None:
    """(reason, message) when the rollout of `target` failed: progress deadline, or failing pods too often."""
    if dep.deadline_exceeded:
        return (Reason.PROGRESS_DEADLINE_EXCEEDED,
                f"{dep.progressing.get('message') or 'progress deadline exceeded'} ({health.message})")
    bad = health.failing(target.version)
    if (bad or health.model_failed) and failures >= spec.monitoring.failure_threshold:
        reason = bad[0].reason if bad else Reason.MODEL_NOT_AVAILABLE
        return reason, (f"{failures} consecutive failed checks (failureThreshold "
                        f"{spec.monitoring.failure_threshold}): {health.message}")
    return None


def failures(spec: ModelDeploymentSpec, obs: Observed, s: Serving, opt: Optimization) -> Outcome:
    """Phase 3: roll back a failed rollout, or stall on it (or on a failed optimization)."""
    prev = obs.status or {}
    rollback = dict(prev.get("rollback") or {})
    failure = _rollout_failure(spec, obs.deployment, s.health, s.target, s.failures) \
        if s.matches and s.rolling and not s.latched_rollback else None
    canary_failure = s.canary.failure if s.canary is not None else None
    if canary_failure is not None:
        failure = canary_failure
    # Until a rollback of this pass, the target stays; the branches below only say why progress stalls.
    kept = Outcome(target=s.target, matches=s.matches, failures=s.failures, failure=failure, stalled=None,
                   rolled_back=s.latched_rollback, rolled_back_now=False, rollout_failed=False, rollback=rollback)
    # A failed canary is always removed: the stable version never stopped serving (monitoring.rollback governs
    # the rolling strategy and the rollout after a promotion).
    if failure is not None and s.new_version and (spec.monitoring.rollback or canary_failure):
        return _rollback(obs, s, failure, rollback)
    if failure is not None:
        reason, message = failure
        why = "monitoring.rollback is false" if s.last_good is not None and s.new_version else \
            "there is no earlier good version to roll back to"
        stalled = (reason, f"version {s.requested.version} failed its rollout: {message}; not rolled back "
                           f"({why}); fix the spec and apply it again")
        events = ()
        if cond(prev.get("conditions"), st.STALLED).get("status") != "True":    # on the transition only
            events = (event(EventType.WARNING, reason, stalled[1]),)
        return dataclasses.replace(kept, stalled=stalled, rollout_failed=True, events=events)
    if s.latched_rollback:
        old = cond(prev.get("conditions"), st.STALLED)
        return dataclasses.replace(kept, stalled=(Reason.ROLLED_BACK, old.get("message") or "rolled back"))
    if opt.state == OptimizationState.FAILED:
        c = opt.optimized
        serving = f"; version {s.current.version} keeps serving" if s.current else ""
        stalled = (c.get("reason"), f"{c.get('message')}{serving}; change the spec (e.g. the gates or "
                                    f"spec.model.version) to try again")
        return dataclasses.replace(kept, stalled=stalled)
    return kept


def _rollback(obs: Observed, s: Serving, failure: tuple, rollback: dict) -> Outcome:
    """Back to the last good version: status.rollback counts it, Stalled=True RolledBack latches it."""
    reason, message = failure
    requested, last_good = s.requested, s.last_good
    text = (f"version {requested.version} ({requested.image}) failed its rollout: {reason}: {message}; "
            f"rolled back to version {last_good.version} ({last_good.image})")
    stalled = (Reason.ROLLED_BACK, text + "; change the spec (e.g. a new spec.model.version) to try again")
    rollback = dict(rollback, count=int(rollback.get("count") or 0) + 1, fromVersion=requested.version,
                    toVersion=last_good.version, lastReason=reason, lastMessage=message[:2000],
                    lastTime=st.timestamp(obs.now))
    return Outcome(target=last_good, matches=obs.deployment.target == last_good, failures=0, failure=failure,
                   stalled=stalled, rolled_back=True, rolled_back_now=True, rollout_failed=True, rollback=rollback,
                   events=(event(EventType.WARNING, Reason.ROLLED_BACK, text),))


def rollout(spec: ModelDeploymentSpec, obs: Observed, s: Serving, o: Outcome, opt: Optimization) -> Rollout:
    """Rollout bookkeeping for the target the Deployment is set to: Events, last good version, status.model."""
    prev = obs.status or {}
    model = dict(prev.get("model") or {})
    if o.rollout_failed:
        model["failedVersion"] = s.requested.version
    target, last_good, events = o.target, s.last_good, []
    complete = o.matches and obs.deployment.rollout_complete
    ready_target = sum(1 for p in s.pods if target is not None and is_ready_pod_of(p, target))
    serving_ok = complete and ready_target >= s.minimum and not s.health.failing(target.version) \
        and obs.model_state in SERVES
    started = target is not None and target != target_from_status(prev) and not o.rolled_back_now
    if started:
        events.append(event(EventType.NORMAL, Reason.ROLLOUT_STARTED,
                            f"rolling out version {target.version} ({target.image})"))
    if serving_ok and target == s.requested and o.failure is None and not o.rolled_back:
        if last_good != target or model.get("servingVersion") != target.version:
            done = f"version {target.version} serves on {ready_target} ready replicas"
            if started:     # started and done since the last status write (a pass put off by a burst): one Event
                events = [event(EventType.NORMAL, Reason.ROLLOUT_COMPLETED,
                                f"rolled out version {target.version} ({target.image}); {done}")]
            else:
                events.append(event(EventType.NORMAL, Reason.ROLLOUT_COMPLETED, done))
        model["lastGoodVersion"] = target.version
        # Pruned by the API server (and by diff.prune) when the installed CRD lacks these fields.
        model["lastGoodImage"], model["lastGoodUri"] = target.image, target.uri
        model["lastGoodRuntime"] = target.runtime
        last_good = target
    if complete and target is not None:
        model["servingVersion"] = target.version
    model["requestedVersion"] = s.requested.version
    if target is not None:
        model["uri"] = target.uri
    if opt.state == OptimizationState.FAILED:
        model["failedVersion"] = s.requested.version
    return Rollout(complete, ready_target, serving_ok, last_good, model, tuple(events))
