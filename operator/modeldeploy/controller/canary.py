"""Canary rollouts (spec.rollout.strategy canary): which step a canary is on and what comes next. Pure.

A new version starts as the canary Deployment (resources/canary.py) while the serving Deployment keeps the last
good version. At every monitor interval the canary's figures and the stable version's (each over the SLO window,
measured on their own pods by controller/scrape.py) decide:

- roll back, as soon as half a window is covered, when the canary breaks spec.monitoring.slo, or is worse than the stable version by more
  than the margins (p99 above stable p99 x maxLatencyRatio and more than LATENCY_MARGIN_FLOOR_MS above it,
  error ratio above stable's + maxErrorRatioIncrease;
  judged only while the stable version has a verdict of its own), or its pods keep failing (failureThreshold
  interval checks) or its Deployment passes its progress deadline;
- stay on the step until its durationSeconds have passed;
- then advance to the next step, or promote after the last one, when the SLO was met over (nearly) a whole
  window (a canary whose pods were slow to start stays until its window has filled);
- hold otherwise: below minRequestsPerSecond there is no verdict, so once the step's duration has passed the
  canary is not proven and the step holds (phase Holding, Reconciling stays True, the stable version serves)
  until traffic gives a verdict. It is never promoted on silence.

`progress()` is what `decide()` calls; its `CanaryPlan` carries the canary Deployment to run (target, split),
status.rollout, the Events of this pass and, for a rollback, the (reason, message) decide's rollback takes.
State lives in status.rollout (step, stepStartTime, canaryVersion, failedChecks), so a restarted operator
continues where it was.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from modeldeploy.api import names
from modeldeploy.api.spec import ModelDeploymentSpec, RolloutSpec, SLOSpec
from modeldeploy.api.status import EventType, Reason, event, parse_time, timestamp
from modeldeploy.controller import slo as slomod
from modeldeploy.controller.observe import DeploymentView
from modeldeploy.resources.canary import Split, split
from modeldeploy.resources.deployment import ServingTarget

PROGRESSING, HOLDING, PROMOTED, ROLLED_BACK, CANCELLED = "Progressing", "Holding", "Promoted", "RolledBack", \
    "Cancelled"
RUNNING = (PROGRESSING, HOLDING)
STAY, ADVANCE, HOLD, PROMOTE, ROLLBACK = "stay", "advance", "hold", "promote", "rollback"
# A Met verdict proves a step only over (nearly) a whole window: the first figures cover one monitor interval.
# 0.9 leaves room for the jitter of the monitor's schedule, which moves the covered span by part of an interval.
MIN_COVERAGE = 0.9
# A violation rolls back only once half a window is covered: a new pod's first requests are slow (TensorFlow
# traces and allocates on the first calls; a model without warmup records pays it on live traffic), and over the
# first seconds those few requests are the whole p99. Half a window keeps detection well within two windows.
MIN_VIOLATION_COVERAGE = 0.5
# The latency margin counts only above this many milliseconds of difference: two pods' p99 at a few ms differ
# by CPU placement, a fresh process's warm-up and the histogram's bucket width (TF Serving's latency buckets
# grow 1.8x a step), not by the model. Seen on the local cluster: a healthy canary at 11.8 ms against a stable
# 5.4 ms broke a 1.5x ratio. Bounds that matter at that scale belong in spec.monitoring.slo.maxP99LatencyMs.
LATENCY_MARGIN_FLOOR_MS = 25.0


def is_canary_pod(pod: dict) -> bool:
    """Whether a serving pod belongs to the canary Deployment (its track label)."""
    return ((pod.get("metadata") or {}).get("labels") or {}).get(names.LABEL_TRACK) == names.TRACK_CANARY


def by_track(pods) -> tuple[list, list]:
    """(stable pods, canary pods)."""
    pods = list(pods)
    return [p for p in pods if not is_canary_pod(p)], [p for p in pods if is_canary_pod(p)]


@dataclass(frozen=True)
class Verdict:
    """The canary's figures against the SLO and the margins: slo.MET, slo.VIOLATED or slo.NO_VERDICT."""
    state: str
    reason: str | None = None       # the rollback reason when VIOLATED
    broken: tuple = ()              # what failed, in words
    summary: str = ""               # both tracks' figures, in words


def _figures(f: slomod.Figures | None) -> str:
    if f is None:
        return "not measured"
    p99 = "n/a" if f.p99_ms is None else f"{f.p99_ms:.1f} ms"
    return (f"{f.requests_per_second:.2f} requests/s, error ratio {f.error_ratio:.4f}, p99 {p99} over "
            f"{f.window_seconds:.0f} s on {f.pods} pod(s)")


def margins(rollout: RolloutSpec, slo: SLOSpec, canary: slomod.Figures, stable: slomod.Figures | None) -> list[str]:
    """The margins the canary breaks against the stable version; none while the stable one has no verdict
    (too few requests: its p99 says nothing to compare with)."""
    if stable is None or slomod.judge(slo, stable)[0] == slomod.NO_VERDICT:
        return []
    out = []
    if canary.p99_ms is not None and stable.p99_ms is not None \
            and canary.p99_ms > stable.p99_ms * rollout.max_latency_ratio \
            and canary.p99_ms - stable.p99_ms > LATENCY_MARGIN_FLOOR_MS:
        out.append(f"p99 {canary.p99_ms:.1f} ms > {rollout.max_latency_ratio:g} x stable p99 {stable.p99_ms:.1f} ms")
    if canary.error_ratio > stable.error_ratio + rollout.max_error_ratio_increase:
        out.append(f"error ratio {canary.error_ratio:.4f} > stable {stable.error_ratio:.4f} + "
                   f"{rollout.max_error_ratio_increase:g}")
    return out


def compare(rollout: RolloutSpec, slo: SLOSpec, canary: slomod.Figures, stable: slomod.Figures | None) -> Verdict:
    """The canary's verdict: the SLO first (it holds whatever the stable version does), then the margins."""
    summary = f"canary: {_figures(canary)}; stable: {_figures(stable)}"
    raw, broken = slomod.judge(slo, canary)
    if raw == slomod.NO_VERDICT:
        return Verdict(slomod.NO_VERDICT, summary=summary)
    if raw == slomod.VIOLATED:
        return Verdict(slomod.VIOLATED, Reason.CANARY_SLO_VIOLATED, tuple(broken), summary)
    worse = margins(rollout, slo, canary, stable)
    if worse:
        return Verdict(slomod.VIOLATED, Reason.CANARY_WORSE_THAN_STABLE, tuple(worse), summary)
    return Verdict(slomod.MET, summary=summary)


@dataclass(frozen=True)
class Step:
    """The decision of one pass: the action, the step (0-based) and its start after it, and the message (None:
    nothing was measured this pass, the stored message stands)."""
    action: str
    index: int
    start: str
    message: str | None
    reason: str | None = None       # the rollback reason


def _plus(t: str, seconds: int) -> str:
    return timestamp(parse_time(t) + timedelta(seconds=seconds))


def next_step(rollout: RolloutSpec, slo: SLOSpec, index: int, start: str, now: str,
              canary: slomod.Figures | None, stable: slomod.Figures | None,
              failure: tuple[str, str] | None = None) -> Step:
    """What happens to the canary on step `index` (started at `start`) now; see the module docstring."""
    steps = rollout.steps
    step = steps[index]
    where = f"step {index + 1}/{len(steps)} (weight {step.weight}%)"
    if failure is not None:
        return Step(ROLLBACK, index, start, f"{where}: {failure[1]}", failure[0])
    if canary is None:                       # not measured this pass (not an interval check, or no scrape yet)
        return Step(STAY, index, start, None)
    v = compare(rollout, slo, canary, stable)
    if v.state == slomod.VIOLATED:
        if canary.window_seconds >= MIN_VIOLATION_COVERAGE * slo.window_seconds:
            return Step(ROLLBACK, index, start, f"{where}: {'; '.join(v.broken)} ({v.summary})", v.reason)
        return Step(STAY, index, start, f"{where}: {'; '.join(v.broken)} so far, over {canary.window_seconds:.0f} "
                                        f"s; judged once {MIN_VIOLATION_COVERAGE * slo.window_seconds:.0f} s of "
                                        f"the {slo.window_seconds} s window are covered ({v.summary})")
    covered = canary.window_seconds >= MIN_COVERAGE * slo.window_seconds
    if v.state == slomod.NO_VERDICT:
        why = f"no verdict: below {slo.min_requests_per_second:g} requests/s"
    elif not covered:
        why = f"SLO met so far, over {canary.window_seconds:.0f} s of a {slo.window_seconds} s window"
    else:
        why = "SLO met and no worse than stable"
    ends = _plus(start, step.duration_seconds)
    if parse_time(now) < parse_time(ends):
        return Step(STAY, index, start, f"{where} until {ends}: {why} ({v.summary})")
    if v.state != slomod.MET:
        return Step(HOLD, index, start, f"{where}: not proven after {step.duration_seconds} s ({why}); the step "
                                        f"holds and the stable version serves until a whole window meets the "
                                        f"SLO ({v.summary})")
    if not covered:      # a canary slow to start: its window fills within an interval or two, no hold for that
        return Step(STAY, index, start, f"{where}, {step.duration_seconds} s passed: {why} ({v.summary})")
    if index + 1 < len(steps):
        following = steps[index + 1]
        return Step(ADVANCE, index + 1, now, f"step {index + 1}/{len(steps)} passed ({v.summary}); step "
                                             f"{index + 2}/{len(steps)} (weight {following.weight}%) until "
                                             f"{_plus(now, following.duration_seconds)}")
    return Step(PROMOTE, index, start, f"all {len(steps)} steps passed ({v.summary}); promoted")


@dataclass
class CanaryPlan:
    """What decide() does with the canary this pass."""
    block: dict                                  # status.rollout
    running: bool = False                        # the canary Deployment must exist (target, split)
    promote: bool = False                        # the serving Deployment rolls to the canary's version
    target: ServingTarget | None = None
    split: Split | None = None
    failure: tuple | None = None                 # (reason, message): decide rolls back
    events: list = field(default_factory=list)   # (type, reason, message)


def _failure(spec: ModelDeploymentSpec, dep: DeploymentView, failing: list, failed_checks: int) \
        -> tuple[str, str] | None:
    if dep.deadline_exceeded:
        return Reason.CANARY_FAILING, (f"the canary Deployment passed its progress deadline: "
                                       f"{dep.progressing.get('message') or 'ProgressDeadlineExceeded'}")
    if failing and failed_checks >= spec.monitoring.failure_threshold:
        shown = "; ".join(f"pod {f.pod} {f.reason}: {f.message}" for f in failing[:3])
        return Reason.CANARY_FAILING, (f"{failed_checks} consecutive failed checks (failureThreshold "
                                       f"{spec.monitoring.failure_threshold}): {shown}")
    return None


def progress(spec: ModelDeploymentSpec, prev: dict | None, requested: ServingTarget, stable: ServingTarget, *,
             now: str, stable_replicas: int, canary_dep: DeploymentView, failing: list, interval_check: bool,
             canary: slomod.Figures | None, stable_figures: slomod.Figures | None) -> CanaryPlan:
    """The canary of `requested` next to `stable` this pass. `prev`: the stored status.rollout; `failing`: the
    canary pods' failure findings (health.Finding); `stable_replicas`: the stable Deployment's current size (the
    HPA's choice under autoscaling)."""
    prev, rollout = prev or {}, spec.rollout
    same = prev.get("canaryVersion") == requested.version and prev.get("stepStartTime")
    if same and prev.get("phase") == PROMOTED:
        return CanaryPlan(block=prev, promote=True, target=requested)
    fresh = not (same and prev.get("phase") in RUNNING)
    index = 0 if fresh else min(max(int(prev.get("step") or 1) - 1, 0), len(rollout.steps) - 1)
    start = now if fresh else prev["stepStartTime"]
    checks = 0 if fresh else int(prev.get("failedChecks") or 0)
    if interval_check:
        checks = checks + 1 if failing else 0
    step = next_step(rollout, spec.monitoring.slo, index, start, now, canary, stable_figures,
                     _failure(spec, canary_dep, failing, checks))
    weight = rollout.steps[step.index].weight
    parts = split(weight, spec.serving.replicas if spec.autoscaling is None else stable_replicas,
                  autoscaled=spec.autoscaling is not None)
    phase = {HOLD: HOLDING, PROMOTE: PROMOTED, ROLLBACK: ROLLED_BACK}.get(step.action, PROGRESSING)
    if step.message is None and not fresh:      # nothing measured this pass: a held step still holds
        phase = prev.get("phase") or phase
    message = step.message or (None if fresh else prev.get("message")) or \
        f"step {step.index + 1}/{len(rollout.steps)} (weight {weight}%): waiting for the canary's figures"
    if phase == HOLDING and prev.get("phase") == HOLDING and not fresh:
        # A hold can last as long as the traffic stays away: the message of its start stands, so a held canary
        # costs no status write per interval for figures that only say "too few requests".
        message = prev.get("message") or message
    block = {"strategy": rollout.strategy, "phase": phase, "step": step.index + 1, "steps": len(rollout.steps),
             "weight": weight, "canaryVersion": requested.version, "stableVersion": stable.version,
             "stepStartTime": step.start, "failedChecks": checks, "message": message}
    if phase in RUNNING:
        block["canaryReplicas"] = parts.canary
        if parts.stable is not None:
            block["stableReplicas"] = parts.stable
    plan = CanaryPlan(block=block, running=phase in RUNNING, promote=phase == PROMOTED, target=requested,
                      split=parts)
    _events(plan, fresh, prev, step, requested)
    return plan


def _events(plan: CanaryPlan, fresh: bool, prev: dict, step: Step, requested: ServingTarget) -> None:
    """Events on transitions only (a rollback's is decide's RolledBack, with the rollback's figures)."""
    b = plan.block
    if fresh:
        plan.events.append(event(EventType.NORMAL, Reason.CANARY_STARTED,
                                 f"canary version {requested.version} ({requested.image}) started at step "
                                 f"1/{b['steps']}: {plan.split.canary} canary replica(s), weight {b['weight']}%"))
    if step.action == ADVANCE:
        plan.events.append(event(EventType.NORMAL, Reason.CANARY_STEP_ADVANCED, b["message"]))
    elif step.action == HOLD and prev.get("phase") != HOLDING:
        plan.events.append(event(EventType.WARNING, Reason.CANARY_HOLDING, b["message"]))
    elif step.action == PROMOTE:
        plan.events.append(event(EventType.NORMAL, Reason.CANARY_PROMOTED,
                                 f"canary version {requested.version}: {b['message']}"))
    elif step.action == ROLLBACK:
        plan.failure = (step.reason, f"canary {b['message']}")


def settle(prev: dict | None, requested: ServingTarget) -> tuple[dict | None, list]:
    """status.rollout and Events when no canary runs this pass: a canary still marked running was abandoned
    (the spec asks for another version again, or for strategy rolling); a finished one is kept as it is."""
    if not prev or prev.get("phase") not in RUNNING:
        return prev, []
    message = (f"canary version {prev.get('canaryVersion')} cancelled: the spec now asks for version "
               f"{requested.version} without a canary; the canary Deployment is removed")
    block = {k: v for k, v in prev.items() if k not in ("canaryReplicas", "stableReplicas")}
    block.update(phase=CANCELLED, message=message)
    return block, [event(EventType.NORMAL, Reason.CANARY_CANCELLED, message)]
