"""What `decide()` needs, gathered: the children from the watch cache, storage only when the Job cannot tell,
TF Serving's model state and SLO figures only where its pods may be reached.

`observed(ctx, spec, meta, status, kids, interval_check, now)` returns the `decide.Observed` of one pass; the
rest are its parts.
"""
from __future__ import annotations

import ipaddress
import time

from modeldeploy.api import names
from modeldeploy.api import spec as specmod
from modeldeploy.controller import decide, diff, health, observe, published
from modeldeploy.controller.context import Context
from modeldeploy.resources import job as job_builder


def _job_pods(pods: list[dict], job: str) -> list[dict]:
    return [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get("job-name") == job
            or ((p.get("metadata") or {}).get("labels") or {}).get("batch.kubernetes.io/job-name") == job]


def _component(obj: dict) -> str | None:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(names.LABEL_COMPONENT)


def _needs_storage(spec: specmod.ModelDeploymentSpec, status: dict, job: observe.JobView | None) -> bool:
    """Only when the Job cannot tell: no Job yet and no record, or a finished Job without a report."""
    if spec.optimization is None:
        return False
    record = status.get("optimization") or {}
    if record.get("version") == spec.model.version and record.get("hash") == specmod.optimization_hash(spec) \
            and (record.get("uri") or record.get("message")):
        return False
    if job is None:
        return True
    return (job.state == observe.SUCCEEDED and not job.report) or \
        (job.state == observe.FAILED and job.reason == "AlreadyPublished" and not (job.report or {}).get("uri"))


def _storage_check(ctx: Context, spec: specmod.ModelDeploymentSpec) -> tuple[bool | None, dict | None]:
    uri = specmod.source_uri(spec, spec.model.version)
    key = (spec.namespace, uri)
    if key in ctx.published_versions:      # a published version stays published: ask storage once
        return ctx.published_versions[key]
    if spec.model.storage_secret and not ctx.read_secrets:
        return None, None              # unknown: the Job checks storage itself, with the tenant's Secret
    creds = ctx.kube.secret_data(spec.namespace, spec.model.storage_secret) if spec.model.storage_secret else {}
    answer = published.check(uri, creds, ctx.s3_endpoint, ctx.ambient_storage)
    if answer[0] and (answer[1] or {}).get("source") not in (None, spec.model.uri):
        return None, None              # published from another model: the Job reports the OutputConflict
    if answer[0]:
        ctx.published_versions[key] = answer
    return answer


def _probe_allowed(ctx: Context, ip: str) -> bool:
    """Whether the pod IP lies in the networks the operator may probe (MODELDEPLOY_PROBE_CIDRS; empty: any)."""
    if not ctx.probe_cidrs:
        return True
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in net for net in ctx.probe_cidrs)


def _model_state(ctx: Context, spec, pods: list[dict], target) -> tuple[str | None, str]:
    if not ctx.probe_models or target is None:
        return None, ""
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if ip and observe.is_ready_pod_of(pod, target) and _probe_allowed(ctx, ip):
            return health.probe_model(f"http://{ip}:{names.REST_PORT}/v1/models/{spec.model.name}",
                                      target.version, ctx.probe_timeout)
    return None, ""


def _keeps_metrics(schema: dict | None) -> bool:
    """Whether the installed CRD keeps status.serving.metrics. An older CRD prunes it, and with it the verdict's
    time that the hysteresis needs: judging anyway would post an Event at every check, so nothing is judged."""
    serving = ((schema or {}).get("properties") or {}).get("serving") or {}
    return schema is None or "metrics" in (serving.get("properties") or {})


def _serving_metrics(ctx: Context, spec, uid: str, pods: list[dict], target, interval_check: bool,
                     track: str = names.TRACK_STABLE):
    """TF Serving's figures over the SLO window: measured on interval checks only (so the scrapes keep the
    monitor's pace whatever else wakes a reconcile), only for objects with an SLO, and only where pods can be
    reached (the model probe's rules: inside the cluster, within MODELDEPLOY_PROBE_CIDRS). `track`: the stable
    pods, or a canary's (whose window goes with its Deployment)."""
    if spec.monitoring.slo is None or not spec.monitoring.prometheus or not _keeps_metrics(ctx.status_schema):
        ctx.slo.forget(uid)
        return None
    if target is None and track == names.TRACK_CANARY:
        ctx.slo.forget(uid, track)
    if not interval_check or not ctx.probe_models or target is None:
        return None
    return ctx.slo.measure(spec, uid, target, pods, lambda ip: _probe_allowed(ctx, ip), time.monotonic(), track)


def observed(ctx: Context, spec: specmod.ModelDeploymentSpec, meta: dict, old_status: dict, kids: dict,
             interval_check: bool, now: str) -> decide.Observed:
    """What decide() needs, from the watch cache's children; storage and TF Serving only when they must be asked."""
    name, generation = meta["name"], int(meta.get("generation") or 1)
    pods = kids["Pod"]
    job_name = job_builder.job_name(spec) if spec.optimization is not None else None
    job = diff.first(kids["Job"], job_name) if job_name else None
    job_view = observe.job_view(job, _job_pods(pods, job_name)) if job is not None else None
    is_published, report = (None, None)
    if _needs_storage(spec, old_status, job_view):
        is_published, report = _storage_check(ctx, spec)
    dep = diff.first(kids["Deployment"], names.serving_name(name))
    dep_view = observe.deployment_view(dep)
    canary_view = observe.deployment_view(diff.first(kids["Deployment"], names.canary_name(name)))
    serving_pods = [p for p in pods if _component(p) == names.COMPONENT_SERVING]
    recorded = observe.recorded_last_good(diff.first(kids["Service"], names.serving_name(name)))
    state, state_message = _model_state(ctx, spec, serving_pods, dep_view.target)
    uid = meta.get("uid") or f"{meta['namespace']}/{name}"
    figures = _serving_metrics(ctx, spec, uid, serving_pods, dep_view.target, interval_check)
    canary_figures = _serving_metrics(ctx, spec, uid, serving_pods, canary_view.target, interval_check,
                                      names.TRACK_CANARY)
    return decide.Observed(generation=generation, status=old_status, now=now, job=job_view, published=is_published,
                           published_report=report, deployment=dep_view, pods=tuple(serving_pods),
                           model_state=state, model_message=state_message,
                           interval_check=interval_check, recorded_last_good=recorded, serving_metrics=figures,
                           canary_deployment=canary_view, canary_metrics=canary_figures)
