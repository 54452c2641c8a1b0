"""Writing a ModelDeployment's children: what this pass wants of each, in the apply order of their registry.

`wanted(ctx, spec, plan)` lists the children a plan decides about, from the pure builders (`desired` None: the
child must not exist); `write(...)` creates, applies or deletes each in order, a taken name checked by the create
itself (its docstring says what a conflict leaves). What differs between kinds is in resources/kinds.py: a kind
whose CRD is optional (the ServiceMonitor) is written only while the API serves it, the Job is only ever created,
and a kind the operator does not watch is read with a GET, only when what we want of it changed or every
RECHECK_SECONDS to repair edits, not on every reconcile.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from modeldeploy.api import names
from modeldeploy.controller import apply, decide, diff
from modeldeploy.controller.context import Context, Result
from modeldeploy.resources import job as job_builder
from modeldeploy.resources import kinds, networkpolicy, servicemonitor
from modeldeploy.resources.canary import build_canary_deployment
from modeldeploy.resources.render import build_serving

RECHECK_SECONDS = 300


@dataclass(frozen=True)
class Child:
    """One child a plan decides about, by name; `desired` None: it must not exist (ours is deleted)."""
    kind: kinds.ChildKind
    name: str
    desired: dict | None


def wanted(ctx: Context, spec, plan: decide.Plan) -> list[Child]:
    """The children of this pass in apply order. The serving ones only once there is a target (until then what
    serves is left alone), the Job only when it is to be created, the canary Deployment always: beside the
    serving one while a canary runs, else ours goes (promoted, rolled back, cancelled)."""
    name, serving_name = spec.name, names.serving_name(spec.name)
    out = [Child(kinds.NETWORK_POLICY, serving_name, networkpolicy.build_network_policy(spec, ctx.egress_cidrs))]
    if plan.create_job:
        job = job_builder.build_job(spec, images=ctx.tool_images, allow_unsafe_formats=ctx.allow_unsafe_formats)
        out.append(Child(kinds.JOB, job["metadata"]["name"], job))
    canary = plan.canary if plan.canary is not None and plan.canary.running else None
    if plan.target is not None:
        serving = build_serving(plan.serving or spec, plan.target, ctx.tool_images, _recorded_last_good(ctx, plan),
                                canary.split.stable if canary is not None else None)
        out += [Child(kinds.BY_KIND[kind], serving_name, desired) for kind, desired in serving.items()]
        out.append(Child(kinds.SERVICE_MONITOR, serving_name, servicemonitor.build_servicemonitor(spec)))
    out.append(Child(kinds.DEPLOYMENT, names.canary_name(name), build_canary_deployment(
        plan.serving or spec, canary.target, canary.split.canary, ctx.tool_images) if canary is not None else None))
    return sorted(out, key=lambda child: child.kind.order)      # stable: the canary after the serving Deployment


def _recorded_last_good(ctx: Context, plan: decide.Plan):
    """The rollback target to record on the Service: only where the installed CRD's status cannot hold its
    image, URI and runtime (an older CRD). Where it can, status.model has it all, and the Service needs no
    second write when a rollout completes."""
    model = (((ctx.status_schema or {}).get("properties") or {}).get("model") or {}).get("properties") or {}
    return None if {"lastGoodImage", "lastGoodUri", "lastGoodRuntime"} <= model.keys() else plan.last_good


def write(ctx: Context, spec, plan: decide.Plan, owner: dict, kids: dict, result: Result,
          check_first: bool = False, first_pass: bool = False) -> None:
    """Write what `wanted` lists, in order: a child that does not exist yet is created with a POST, which answers
    a taken name itself (no GET before it); an existing one of ours is applied when it differs; one that must not
    exist is deleted. A taken name raises NameConflict: the object is never touched, and children already
    created by this pass stay (ours, harmless, used once the name is free; the operator may not delete
    Services). Every new name is read before the first write instead when the pass also changes
    existing children (a conflict leaves them unchanged, not half-changed) or `check_first` (the last pass
    stalled on a taken name: its retries read, they do not send a create bound to fail). `first_pass`: the
    ModelDeployment was never reconciled (no status yet), so its unwatched children are created without a GET."""
    todo = _live(ctx, spec, owner, kids, wanted(ctx, spec, plan), first_pass)
    new = [child.desired is not None and live is None and not child.kind.create_only for child, live in todo]
    if any(new) and (check_first or _changes_existing(todo, owner)):
        todo = [(child, ctx.kube.get(child.kind.kind, spec.namespace, child.name) if unknown else live)
                for (child, live), unknown in zip(todo, new)]
    for child, live in todo:
        if child.desired is not None and live is not None and not diff.owned_by(live, owner["uid"]):
            raise apply.NameConflict(child.kind.kind, spec.namespace, child.name, live)
    for child, live in todo:
        _write_one(ctx, spec, child, owner, live, result)


def _changes_existing(todo: list[tuple[Child, dict | None]], owner: dict) -> bool:
    """Whether writing `todo` changes or deletes a child of ours that exists."""
    return any(live is not None and diff.owned_by(live, owner["uid"]) and (
        child.desired is None or diff.needs_apply(child.desired, live, owner)) for child, live in todo)


def _live(ctx: Context, spec, owner: dict, kids: dict, wanted_: list[Child], first_pass: bool) \
        -> list[tuple[Child, dict | None]]:
    """Each child with its live object (None: absent, or not known to exist). A cached kind's from the watch
    cache (which holds only objects with our labels); an unwatched kind is read with a GET, except when it was
    written as it is wanted now, recently (skipped), or on the ModelDeployment's first pass (nothing of it can
    exist yet: created, and a taken name answers the create). After a restart it is read, not created: a create
    bound to find it would be a write."""
    out = []
    for child in wanted_:
        if child.kind.optional and not ctx.kube.crd_exists(child.kind.api_version, child.kind.plural):
            continue                    # the CRD is not installed: nothing to write, nothing of ours to delete
        if child.kind.watched:
            out.append((child, diff.first(kids[child.kind.kind], child.name)))
        elif _recently_written(ctx, spec, child, owner):
            continue
        elif child.desired is not None and first_pass:
            out.append((child, None))
        else:
            out.append((child, ctx.kube.get(child.kind.kind, spec.namespace, child.name)))
    return out


def _write_one(ctx: Context, spec, child: Child, owner: dict, live: dict | None, result: Result) -> None:
    kube, kind = ctx.kube, child.kind.kind
    if child.desired is None:
        if live is None or not diff.owned_by(live, owner["uid"]):
            return                      # anyone else's object is left alone
        kube.delete(kind, live)
        action = "deleted"
    elif child.kind.create_only and live is not None:
        return                          # created before; never changed
    elif live is None:
        action, obj = kube.create(child.desired, owner)
        if action == "exists" and not child.kind.create_only:     # ours (the cache was behind): brought up to date
            action, _ = kube.ensure(child.desired, owner, obj)
    else:
        action, _ = kube.ensure(child.desired, owner, live)
    if child.desired is not None and not child.kind.watched:
        ctx.unwatched[_unwatched_key(spec, child, owner)] = (_digest(child), time.monotonic())
    if action != "unchanged":
        result.actions.append(f"{kind} {action}")


def _unwatched_key(spec, child: Child, owner: dict) -> tuple:
    return child.kind.kind, spec.namespace, child.name, owner["uid"]


def _digest(child: Child) -> str:
    return json.dumps(child.desired, sort_keys=True)


def _recently_written(ctx: Context, spec, child: Child, owner: dict) -> bool:
    """Whether an unwatched child was written as it is wanted now, less than RECHECK_SECONDS ago."""
    seen = ctx.unwatched.get(_unwatched_key(spec, child, owner))
    return seen is not None and seen[0] == _digest(child) and time.monotonic() - seen[1] < RECHECK_SECONDS
