"""`reconcile()`: the one level-based, idempotent pass every handler and the monitor call.

read (children from the watch cache, storage only when the Job cannot tell) -> `decide()` (pure) -> act (create
the Job, apply the serving children for the chosen target, delete what must not exist) -> write status only
when it changed -> post the Events of this transition. Running it twice in a row writes nothing the second time.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from modeldeploy.api import names
from modeldeploy.api import spec as specmod
from modeldeploy.api.crd import status_schema as bundled_status_schema
from modeldeploy.api.status import STALLED, EventType, Reason, event
from modeldeploy.controller import apply, decide, health, metrics, observe, obslog, published
from modeldeploy.controller.decide.optimization import OPTIMIZATION_FAILURES
from modeldeploy.controller.scrape import SLOMonitor
from modeldeploy.resources import job as job_builder
from modeldeploy.resources import kinds, networkpolicy, servicemonitor
from modeldeploy.resources.canary import build_canary_deployment
from modeldeploy.resources.common import OperatorImages, operator_images_from_env
from modeldeploy.resources.render import build_serving

log = logging.getLogger(__name__)
SERVICE_MONITOR_RECHECK_SECONDS = 300


def _env_float(name: str, default: float | None) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else default


@dataclass
class Context:
    """Process-wide settings and clients for reconciles (built once at startup)."""
    kube: apply.Kube
    serving_images: specmod.ServingImages = field(default_factory=specmod.images_from_env)
    tool_images: OperatorImages = field(default_factory=operator_images_from_env)
    # MODELDEPLOY_RECONCILE_INTERVAL: overrides spec.monitoring.intervalSeconds (tests use a few seconds).
    interval_override: float | None = field(default_factory=lambda: _env_float("MODELDEPLOY_RECONCILE_INTERVAL", None))
    # TF Serving's model endpoint is probed only from inside the cluster network (pod IPs are not routable
    # elsewhere); MODELDEPLOY_PROBE_MODELS=1/0 forces it on/off.
    probe_models: bool = field(default_factory=lambda: os.environ.get(
        "MODELDEPLOY_PROBE_MODELS", "1" if os.environ.get("KUBERNETES_SERVICE_HOST") else "0") == "1")
    # MODELDEPLOY_PROBE_CIDRS (comma-separated): probe only pods in these networks. On the local test cluster
    # only the runner's loopback pod IPs answer; kwok's simulated pod IPs must never be sent traffic.
    probe_cidrs: tuple = field(default_factory=lambda: tuple(
        ipaddress.ip_network(c.strip()) for c in os.environ.get("MODELDEPLOY_PROBE_CIDRS", "").split(",")
        if c.strip()))
    probe_timeout: float = field(default_factory=lambda: _env_float("MODELDEPLOY_PROBE_TIMEOUT", 1.0))
    # The operator's own storage reads: the S3 endpoint (an administrator's setting, never a tenant's Secret),
    # and whether a ModelDeployment without storageSecret may use the operator's ambient cloud identity.
    s3_endpoint: str | None = field(default_factory=lambda: os.environ.get("MODELDEPLOY_S3_ENDPOINT_URL") or None)
    ambient_storage: bool = field(default_factory=lambda: os.environ.get(
        "MODELDEPLOY_AMBIENT_STORAGE_CREDENTIALS") == "1")
    # MODELDEPLOY_EGRESS_CIDRS: where the pods' NetworkPolicy lets them connect (storage); "none": no policy.
    egress_cidrs: tuple | None = field(default_factory=lambda: networkpolicy.egress_from_env(
        os.environ.get("MODELDEPLOY_EGRESS_CIDRS")))
    # MODELDEPLOY_READ_SECRETS=1 (chart: rbac.readSecrets): the operator reads a ModelDeployment's storageSecret
    # to check storage itself (saves a Job run for a version already published). Off by default: no Secret
    # access at all; the Job checks and reports instead.
    read_secrets: bool = field(default_factory=lambda: os.environ.get("MODELDEPLOY_READ_SECRETS") == "1")
    # Model formats that run Python when loaded (.h5, Lambda layers): refused by the optimizer unless allowed.
    allow_unsafe_formats: bool = field(default_factory=lambda: os.environ.get(
        "MODELDEPLOY_ALLOW_UNSAFE_MODEL_FORMATS") == "1")
    instance: str = field(default_factory=lambda: os.environ.get("POD_NAME", "") or os.uname().nodename)
    # TF Serving's metrics of objects with spec.monitoring.slo, scraped on interval checks (controller/scrape.py).
    slo: SLOMonitor = field(default_factory=SLOMonitor)
    status_schema: dict | None = None
    _published: dict = field(default_factory=dict)
    _service_monitors: dict = field(default_factory=dict)

    def load_schema(self) -> None:
        """The status schema of the installed CRD (else the bundled one): computed status is pruned to it."""
        self.status_schema = self.kube.status_schema() or bundled_status_schema()

    def interval(self, spec: specmod.ModelDeploymentSpec | None) -> float:
        """Seconds between health checks of one ModelDeployment."""
        if self.interval_override:
            return self.interval_override
        return float(spec.monitoring.interval_seconds if spec is not None else 30)


@dataclass
class Result:
    """What one reconcile did (for logs, tests and the monitor's scheduling)."""
    status_written: bool = False
    actions: list = field(default_factory=list)
    events: list = field(default_factory=list)
    error: str | None = None
    body: dict | None = None          # the ModelDeployment as returned by the status patch


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    if key in ctx._published:          # a published version stays published: ask storage once
        return ctx._published[key]
    if spec.model.storage_secret and not ctx.read_secrets:
        return None, None              # unknown: the Job checks storage itself, with the tenant's Secret
    creds = ctx.kube.secret_data(spec.namespace, spec.model.storage_secret) if spec.model.storage_secret else {}
    answer = published.check(uri, creds, ctx.s3_endpoint, ctx.ambient_storage)
    if answer[0] and (answer[1] or {}).get("source") not in (None, spec.model.uri):
        return None, None              # published from another model: the Job reports the OutputConflict
    if answer[0]:
        ctx._published[key] = answer
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


def reconcile(body: dict, ctx: Context, *, interval_check: bool = False, now: str | None = None) -> Result:
    """Bring one ModelDeployment's children and status to what its spec asks for. Raises apply.ApiError."""
    started = time.monotonic()
    error = True
    try:
        result = _reconcile(body, ctx, interval_check=interval_check, now=now or _now())
        error = False
        return result
    finally:
        metrics.observe_reconcile(time.monotonic() - started, error)


def _reconcile(body: dict, ctx: Context, *, interval_check: bool, now: str) -> Result:
    kube = ctx.kube
    meta = body["metadata"]
    ns, name, generation = meta["namespace"], meta["name"], int(meta.get("generation") or 1)
    old_status = {k: v for k, v in (body.get("status") or {}).items() if k != "kopf"}
    result = Result()
    try:
        spec = specmod.parse(body, ctx.serving_images)
    except specmod.SpecError as exc:
        new = apply.prune(obslog.redact_messages(decide.invalid_spec_status(old_status, generation, exc, now)),
                          ctx.status_schema)
        _write_status(ctx, body, old_status, new, result)
        return result

    owner = apply.owner_reference(body)
    kids = {kind.kind: kube.children(kind.kind, ns, name) for kind in kinds.CACHED}
    plan = decide.decide(spec, _observed(ctx, spec, meta, old_status, kids, interval_check, now))

    try:
        _write_children(ctx, spec, plan, owner, kids, result)
    except (apply.NameConflict, apply.ApiError) as exc:
        if not _stall_on_children(exc, plan, old_status, generation, now):
            raise

    new_status = apply.prune(obslog.redact_messages(plan.status), ctx.status_schema)
    _write_status(ctx, body, old_status, new_status, result)
    for type_, reason, message in plan.events:
        message = obslog.redact(message)
        kube.post_event(body, type_, reason, message, ctx.instance)
        result.events.append((type_, reason, message))
        _observe_event(spec, reason, old_status, new_status)
    metrics.observe_model(dict(body, status=new_status))
    if result.actions or result.events:
        log.info("reconciled %s/%s: %s", ns, name, "; ".join(result.actions + [e[1] for e in result.events]),
                 extra={"namespace": ns, "md_name": name})
    return result


def _observed(ctx: Context, spec: specmod.ModelDeploymentSpec, meta: dict, old_status: dict, kids: dict,
              interval_check: bool, now: str) -> decide.Observed:
    """What decide() needs, from the watch cache's children; storage and TF Serving only when they must be asked."""
    name, generation = meta["name"], int(meta.get("generation") or 1)
    pods = kids["Pod"]
    job_name = job_builder.job_name(spec) if spec.optimization is not None else None
    job = apply.first(kids["Job"], job_name) if job_name else None
    job_view = observe.job_view(job, _job_pods(pods, job_name)) if job is not None else None
    is_published, report = (None, None)
    if _needs_storage(spec, old_status, job_view):
        is_published, report = _storage_check(ctx, spec)
    dep = apply.first(kids["Deployment"], names.serving_name(name))
    dep_view = observe.deployment_view(dep)
    canary_view = observe.deployment_view(apply.first(kids["Deployment"], names.canary_name(name)))
    serving_pods = [p for p in pods if _component(p) == names.COMPONENT_SERVING]
    recorded = observe.recorded_last_good(apply.first(kids["ConfigMap"], names.config_map_name(name)))
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
    plan.status = decide.stalled_status(plan.status, generation, reason, message, now)
    if decide.condition_reason(old_status, STALLED) != reason:     # on the transition only
        plan.events.append(event(EventType.WARNING, reason, message))
    return True


def _write_children(ctx: Context, spec, plan, owner: dict, kids: dict, result: Result) -> None:
    """Create the Job and apply the serving children the plan asks for. Every name is checked before the first
    write, so a conflict changes nothing."""
    kube, name = ctx.kube, spec.name
    # The NetworkPolicy first: it must hold before the Job's pod or a serving pod starts.
    serving = {"NetworkPolicy": networkpolicy.build_network_policy(spec, ctx.egress_cidrs)}
    canary = plan.canary if plan.canary is not None and plan.canary.running else None
    if plan.target is not None:
        serving.update(build_serving(plan.serving or spec, plan.target, ctx.tool_images, plan.last_good,
                                     canary.split.stable if canary is not None else None))
    lives = {kind: apply.first(kids[kind], names.config_map_name(name) if kind == "ConfigMap" else
                               names.serving_name(name)) for kind in serving}
    canary_live = apply.first(kids["Deployment"], names.canary_name(name))
    canary_desired = build_canary_deployment(plan.serving or spec, canary.target, canary.split.canary,
                                             ctx.tool_images) if canary is not None else None
    for kind, desired in list(serving.items()) + [("Deployment", canary_desired)]:
        if desired is not None:
            kube.check_owner(desired, owner, canary_live if desired is canary_desired else lives[kind])
    policy = serving.pop("NetworkPolicy")
    _apply_or_delete(kube, "NetworkPolicy", policy, owner, lives["NetworkPolicy"], result)
    if plan.create_job:
        action, _ = kube.create(job_builder.build_job(spec, images=ctx.tool_images,
                                                      allow_unsafe_formats=ctx.allow_unsafe_formats), owner)
        result.actions.append(f"job {action}")
    for kind, desired in serving.items():
        _apply_or_delete(kube, kind, desired, owner, lives[kind], result)
    # The canary beside the serving Deployment while one runs; else ours goes (promoted, rolled back, cancelled).
    _apply_or_delete(kube, "Deployment", canary_desired, owner, canary_live, result)
    if plan.target is not None:
        _service_monitor(ctx, spec, owner, result)


def _apply_or_delete(kube, kind: str, desired: dict | None, owner: dict, live: dict | None, result: Result) -> None:
    """Apply `desired`; None means the child must not exist (ours is deleted, anyone else's left alone)."""
    if desired is None:
        if live is not None and apply.owned_by(live, owner["uid"]):
            kube.delete(kind, live)
            result.actions.append(f"{kind} deleted")
        return
    action, _ = kube.ensure(desired, owner, live)
    if action != "unchanged":
        result.actions.append(f"{kind} {action}")


def _write_status(ctx: Context, body: dict, old: dict, new: dict, result: Result) -> None:
    obj = ctx.kube.patch_status(body, old, new)
    if obj is not None:
        result.status_written = True
        result.body = obj


def _service_monitor(ctx: Context, spec, owner: dict, result: Result) -> None:
    """Apply the ServiceMonitor when the Prometheus Operator's CRD is installed (checked every few minutes)."""
    if not ctx.kube.crd_exists(f"{servicemonitor.GROUP}/v1", servicemonitor.PLURAL):
        return
    desired = servicemonitor.build_servicemonitor(spec)
    # ServiceMonitors are not in the watch cache (their CRD may come and go): GET one only when what we want
    # changed, or every few minutes to repair edits, not on every reconcile.
    key, digest = (spec.namespace, spec.name, owner["uid"]), json.dumps(desired, sort_keys=True)
    seen = ctx._service_monitors.get(key)
    if seen is not None and seen[0] == digest and time.monotonic() - seen[1] < SERVICE_MONITOR_RECHECK_SECONDS:
        return
    live = ctx.kube.get("ServiceMonitor", spec.namespace, names.serving_name(spec.name))
    if desired is None:
        if live is not None and apply.owned_by(live, owner["uid"]):
            ctx.kube.delete("ServiceMonitor", live)
            result.actions.append("ServiceMonitor deleted")
        return
    if live is not None:
        ctx.kube.check_owner(desired, owner, live)
    action, _ = ctx.kube.ensure(desired, owner, live)
    ctx._service_monitors[key] = (digest, time.monotonic())
    if action != "unchanged":
        result.actions.append(f"ServiceMonitor {action}")


def _observe_event(spec, reason: str, old: dict, new: dict) -> None:
    if reason == Reason.ROLLED_BACK:
        metrics.inc_rollback(spec.namespace, spec.name)
    if reason == Reason.SLO_VIOLATED:
        metrics.inc_slo_violation(spec.namespace, spec.name)
    opt = new.get("optimization") or {}
    if reason in (Reason.JOB_SUCCEEDED, *OPTIMIZATION_FAILURES) \
            and opt.get("startTime") and opt.get("completionTime"):
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        seconds = (datetime.strptime(opt["completionTime"], fmt) - datetime.strptime(opt["startTime"], fmt))
        metrics.observe_optimization(seconds.total_seconds())
