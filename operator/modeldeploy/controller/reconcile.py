"""`reconcile()`: the one level-based, idempotent pass every handler and the monitor call.

read (gather.py: children from the watch cache, storage only when the Job cannot tell) -> `decide()` (pure) ->
act (children.py: create the Job, apply the serving children for the chosen target, delete what must not exist)
-> write status only when it changed -> post the Events of this transition. Running it twice in a row writes
nothing the second time. The settings and memory every pass shares are context.py's `Context`.

`may_defer` (the object is new to the monitor: its first pass, or any pass in a burst; controller/monitor.py):
an object never reported (the CRD's default status, observedGeneration 0) that is still Reconciling writes its
children but puts off its status and Events; a later pass computes them from the children as they are by then
(in a burst usually one Ready write and one RolloutCompleted Event, instead of two writes and two Events). A
stall is reported at once.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

from modeldeploy.api import spec as specmod
from modeldeploy.api.status import (RECONCILING, STALLED, EventType, Reason, event, is_true, seconds_between,
                                    timestamp)
from modeldeploy.controller import apply, children, decide, diff, gather, metrics, obslog
from modeldeploy.controller.context import Context, Result
from modeldeploy.controller.decide.optimization import OPTIMIZATION_FAILURES
from modeldeploy.resources import kinds

log = logging.getLogger(__name__)

def _now() -> str:
    return timestamp(datetime.now(timezone.utc))


def reconcile(body: dict, ctx: Context, *, interval_check: bool = False, now: str | None = None,
              may_defer: bool = False) -> Result:
    """Bring one ModelDeployment's children and status to what its spec asks for. Raises apply.ApiError."""
    started = time.monotonic()
    error = True
    try:
        result = _reconcile(body, ctx, interval_check=interval_check, now=now or _now(), may_defer=may_defer)
        error = False
        return result
    finally:
        metrics.observe_reconcile(time.monotonic() - started, error)


def _reconcile(body: dict, ctx: Context, *, interval_check: bool, now: str, may_defer: bool) -> Result:
    meta = body["metadata"]
    ns, name, generation = meta["namespace"], meta["name"], int(meta.get("generation") or 1)
    old_status = {k: v for k, v in (body.get("status") or {}).items() if k != "kopf"}
    result = Result()
    try:
        spec = specmod.parse(body, ctx.serving_images)
    except specmod.SpecError as exc:
        new = diff.prune(obslog.redact_messages(decide.invalid_spec_status(old_status, generation, exc, now)),
                          ctx.status_schema)
        _write_status(ctx, body, old_status, new, result)
        return result

    owner = diff.owner_reference(body)
    kids = {kind.kind: ctx.kube.children(kind.kind, ns, name) for kind in kinds.CACHED}
    plan = decide.decide(spec, gather.observed(ctx, spec, meta, old_status, kids, interval_check, now))

    first_report = not old_status.get("observedGeneration")      # the CRD's default status says 0
    stalled = False
    try:
        children.write(ctx, spec, plan, owner, kids, result, first_pass=first_report,
                       check_first=decide.condition_reason(old_status, STALLED) == Reason.NAME_CONFLICT)
    except (apply.NameConflict, apply.ApiError) as exc:
        stalled = _stall_on_children(exc, plan, old_status, generation, now)
        if not stalled:
            raise

    result.deferred = (may_defer and first_report and not stalled
                       and is_true(plan.status.get("conditions"), RECONCILING))     # module docstring
    if not result.deferred:
        _report(ctx, body, spec, plan, old_status, result)
    if result.actions or result.events:
        log.info("reconciled %s/%s: %s", ns, name, "; ".join(result.actions + [e[1] for e in result.events]),
                 extra={"namespace": ns, "md_name": name})
    return result


def _report(ctx: Context, body: dict, spec, plan: decide.Plan, old_status: dict, result: Result) -> None:
    """Write the plan's status (when it changed) and post its Events."""
    new_status = diff.prune(obslog.redact_messages(plan.status), ctx.status_schema)
    _write_status(ctx, body, old_status, new_status, result)
    for type_, reason, message in plan.events:
        message = obslog.redact(message)
        ctx.kube.post_event(body, type_, reason, message, ctx.instance)
        result.events.append((type_, reason, message))
        _observe_event(spec, reason, old_status, new_status)
    metrics.observe_model(dict(body, status=new_status))


def _stall_on_children(exc: Exception, plan: decide.Plan, old_status: dict, generation: int, now: str) -> bool:
    """A child could not be written: Stalled=True in the plan's status when retrying cannot help (True); False
    when it may (the caller re-raises)."""
    if isinstance(exc, apply.NameConflict):
        reason, message = Reason.NAME_CONFLICT, str(exc)
    elif exc.status in (400, 422):   # the API server refused a child built from this spec: retrying won't help
        reason, message = Reason.INVALID_SPEC, (f"the API server refused a child: {exc}; fix the spec and "
                                                "apply it again")
    else:
        return False
    plan.status = decide.stalled_status(plan.status, generation, reason, message, now, old_status)
    if decide.condition_reason(old_status, STALLED) != reason:     # on the transition only
        plan.events.append(event(EventType.WARNING, reason, message))
    return True


def _write_status(ctx: Context, body: dict, old: dict, new: dict, result: Result) -> None:
    obj = ctx.kube.patch_status(body, old, new)
    if obj is not None:
        result.status_written = True
        result.body = obj


def _observe_event(spec, reason: str, old: dict, new: dict) -> None:
    if reason == Reason.ROLLED_BACK:
        metrics.inc_rollback(spec.namespace, spec.name)
    if reason == Reason.SLO_VIOLATED:
        metrics.inc_slo_violation(spec.namespace, spec.name)
    opt = new.get("optimization") or {}
    if reason in (Reason.JOB_SUCCEEDED, *OPTIMIZATION_FAILURES) \
            and opt.get("startTime") and opt.get("completionTime"):
        metrics.observe_optimization(seconds_between(opt["startTime"], opt["completionTime"]))
