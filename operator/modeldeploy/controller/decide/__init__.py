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
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from modeldeploy.api import names
from modeldeploy.api import status as st
from modeldeploy.api.spec import ModelDeploymentSpec, optimization_hash, source_uri
from modeldeploy.api.status import Reason
from modeldeploy.controller import canary as cn
from modeldeploy.controller import health as hl
from modeldeploy.controller import slo as slomod
from modeldeploy.controller import tuning
from modeldeploy.controller.observe import (FAILED, RUNNING, SUCCEEDED, DeploymentView, JobView,
                                            failure_reason, for_runtime, is_ready_pod_of, optimization_record,
                                            runtimes_of)
from modeldeploy.resources import job as job_builder
from modeldeploy.resources.deployment import ServingTarget, target_from_spec

OPTIMIZATION_FAILURES = (Reason.JOB_FAILED, Reason.ACCURACY_GATE_FAILED, Reason.COMPRESSION_GATE_FAILED)
NORMAL, WARNING = "Normal", "Warning"
HEALTHY, UNHEALTHY, UNKNOWN = "Healthy", "Unhealthy", "Unknown"


@dataclass(frozen=True)
class Observed:
    """Everything the reconciler read for one ModelDeployment (plain data)."""
    generation: int
    status: dict
    now: str                                   # RFC 3339, the only clock the decisions see
    job: JobView | None = None                 # the Job for (requested version, optimization hash), if it exists
    published: bool | None = None              # storage: is the requested version already published? None: unknown
    published_report: dict | None = None       # report.json of a version published earlier / a Job without report
    deployment: DeploymentView = DeploymentView()
    pods: tuple = ()                           # serving pods (dicts)
    model_state: str | None = None             # TF Serving's model state, None when unreachable
    model_message: str = ""                    # TF Serving's error message for that state, if any
    recorded_last_good: ServingTarget | None = None   # the rollback target recorded on the ConfigMap
    interval_check: bool = False               # a scheduled health check: counts towards failureThreshold
    serving_metrics: slomod.Figures | None = None   # TF Serving's figures over the SLO window; None: not measured
    canary_deployment: DeploymentView = DeploymentView()   # the canary Deployment (strategy canary)
    canary_metrics: slomod.Figures | None = None    # the canary pods' figures (serving_metrics: the stable pods')


@dataclass
class Plan:
    """What to do. `status` is the whole new status; compare it with the stored one before writing."""
    status: dict
    create_job: bool = False
    target: ServingTarget | None = None
    serving: ModelDeploymentSpec | None = None      # the spec with what auto chose (batching) filled in
    last_good: ServingTarget | None = None          # to record on the Deployment (rollback target)
    rolled_back: bool = False
    events: list = field(default_factory=list)      # (type, reason, message)
    canary: cn.CanaryPlan | None = None             # running: the canary Deployment to run beside the serving one


def _cond(conditions, type_):
    return st.get_condition(conditions, type_) or {}


def _latched(conditions, type_: str, reasons, generation: int, status: str) -> dict | None:
    """A condition that already recorded a failure of this very generation."""
    c = _cond(conditions, type_)
    if c.get("status") == status and c.get("reason") in reasons and c.get("observedGeneration") == generation:
        return c
    return None


def minimum_ready(spec: ModelDeploymentSpec) -> int:
    """Ready replicas the model needs to count as served: the HPA's minimum, else spec.serving.replicas."""
    return spec.autoscaling.min_replicas if spec.autoscaling is not None else spec.serving.replicas


def _target_from_status(status: dict) -> ServingTarget | None:
    serving, model = status.get("serving") or {}, status.get("model") or {}
    if serving.get("version") and serving.get("image") and model.get("uri"):
        return ServingTarget(int(serving["version"]), serving["image"], model["uri"],
                             serving.get("runtime") or "tensorflow")
    return None


def last_good_target(spec: ModelDeploymentSpec, status: dict, recorded: ServingTarget | None = None) \
        -> ServingTarget | None:
    """The rollback target: lastGoodVersion with the image and URI that served it.

    From status.model.lastGood{Image,Uri} when the CRD has them, else from the last-good annotation
    (`recorded`, from the ConfigMap's annotation), else the spec's image and URI for that version.
    """
    model = status.get("model") or {}
    version = model.get("lastGoodVersion")
    if not version:
        return None
    version = int(version)
    if recorded is not None and recorded.version == version:
        image, uri, runtime = recorded.image, recorded.uri, recorded.runtime
    else:
        image, uri, runtime = spec.serving.image, source_uri(spec, version), "tensorflow"
    return ServingTarget(version, model.get("lastGoodImage") or image, model.get("lastGoodUri") or uri,
                         model.get("lastGoodRuntime") or runtime)


class _Conditions:
    """Accumulates condition changes against the stored list (lastTransitionTime kept unless status flips)."""

    def __init__(self, stored, generation: int, now: str):
        self.items, self.generation, self.now = [dict(c) for c in stored or ()], generation, now

    def set(self, type_: str, status, reason: str, message: str) -> None:
        self.items, _ = st.set_condition(self.items, type_, status, reason, message, self.generation, self.now)


def _optimization(spec: ModelDeploymentSpec, obs: Observed, plan: Plan, conds: _Conditions) -> tuple[str, dict]:
    """Decide the optimization step; returns (state, status.optimization) with state none|published|wait|failed."""
    prev = dict((obs.status.get("optimization")) or {})
    if spec.optimization is None:
        conds.set(st.OPTIMIZED, True, Reason.NOT_REQUESTED, "spec.optimization is not set: the model is served as it is")
        return "none", {}
    version, opt_hash = spec.model.version, optimization_hash(spec)
    name = job_builder.job_name(spec)
    mine = prev.get("version") == version and prev.get("hash") == opt_hash
    if mine and prev.get("uri"):
        optimized = _cond(conds.items, st.OPTIMIZED)
        if tuning.choose_runtime(spec, prev)[0] in runtimes_of(prev):   # else _servable says why it cannot serve
            if optimized.get("status") != "True":       # e.g. the condition was lost: say it again
                conds.set(st.OPTIMIZED, True, Reason.JOB_SUCCEEDED,
                          f"version {version} is published at {prev['uri']}")
            else:
                conds.set(st.OPTIMIZED, True, optimized["reason"], optimized.get("message") or "published")
        return _servable(spec, prev, conds)
    latch = _latched(conds.items, st.OPTIMIZED, OPTIMIZATION_FAILURES, obs.generation, "False")
    if mine and latch:
        conds.set(st.OPTIMIZED, False, latch["reason"], latch.get("message") or "the optimization failed")
        return "failed", prev

    job, published, published_report = obs.job, obs.published, obs.published_report
    if job is not None and job.state == FAILED and job.reason == "AlreadyPublished":
        # The Job found the version complete; its termination message carries that version's report.json, so
        # the operator needs no storage access (nor the tenant's Secret) to adopt it.
        if job.report and job.report.get("uri"):
            published_report = {k: v for k, v in job.report.items() if k not in ("ok", "error")}
        job, published = None, True
    record = {"job": name, "version": version, "hash": opt_hash}
    if job is not None and job.start_time:
        record["startTime"] = job.start_time
    if job is not None and job.state == RUNNING:
        conds.set(st.OPTIMIZED, False, Reason.JOB_RUNNING, f"Job {name} is optimizing version {version}")
        return "wait", record
    if job is not None and job.state == SUCCEEDED:
        report = job.report if job.report and job.report.get("ok", True) else obs.published_report
        figures = optimization_record(report)
        figures.setdefault("uri", source_uri(spec, version))
        record.update(figures)
        if job.completion_time:
            record["completionTime"] = job.completion_time
        if report:
            message = (f"version {version} published at {record['uri']}: compression "
                       f"{record.get('compressionRatio', 0):.2f}x, accuracy drop {_fmt(record.get('accuracyDrop'))}, "
                       f"sparsity {_fmt(record.get('sparsity'))}")
            conds.set(st.OPTIMIZED, True, Reason.JOB_SUCCEEDED, message)
        else:
            message = (f"version {version} published at {record['uri']}, but neither the termination message nor "
                       f"report.json could be read: figures are missing")
            conds.set(st.OPTIMIZED, True, Reason.REPORT_UNREADABLE, message)
        plan.events.append((NORMAL, "JobSucceeded", f"Job {name}: {message}"))
        return _servable(spec, record, conds)
    if job is not None and job.state == FAILED:
        reason = failure_reason(job)
        message = f"Job {name} failed: {job.reason}: {job.message}".rstrip(": ")
        record["message"] = message[:2000]
        if job.completion_time:
            record["completionTime"] = job.completion_time
        conds.set(st.OPTIMIZED, False, reason, message)
        plan.events.append((WARNING, reason, message))
        return "failed", record
    if published:
        figures = optimization_record(published_report)
        figures.setdefault("uri", source_uri(spec, version))
        record.update(figures)
        message = (f"version {version} is already published at {record['uri']}: serving it without optimizing "
                   f"again (raise spec.model.version to optimize with the current settings)")
        conds.set(st.OPTIMIZED, True, Reason.ALREADY_PUBLISHED, message)
        return _servable(spec, record, conds)
    plan.create_job = True
    conds.set(st.OPTIMIZED, False, Reason.JOB_RUNNING, f"Job {name} is optimizing version {version}")
    if prev.get("job") != name:
        plan.events.append((NORMAL, "JobStarted", f"created Job {name} to optimize version {version}"))
    return "wait", record


def _servable(spec: ModelDeploymentSpec, record: dict, conds: _Conditions) -> tuple[str, dict]:
    """A published version, with the figures of the runtime the spec serves it with; "failed" (nothing rolls
    out, what serves keeps serving) when the version has no artefact for that runtime."""
    runtime, _ = tuning.choose_runtime(spec, record)
    if runtime in runtimes_of(record):
        return "published", for_runtime(record, runtime, spec.serving.gpus)
    conds.set(st.OPTIMIZED, False, Reason.RUNTIME_UNAVAILABLE,
              f"version {spec.model.version} has no artefact for spec.serving.runtime {runtime} (the TFLite "
              f"converter could not convert this model, or model.tflite failed the gates; the optimizer Job's log "
              f"and report.json say why): serve it with runtime tensorflow or auto")
    return "failed", record


def _fmt(value) -> str:
    return "n/a" if value is None else f"{float(value):.4f}"


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


def decide(spec: ModelDeploymentSpec, obs: Observed) -> Plan:
    """The whole decision for one reconcile. See the module docstring."""
    prev = obs.status or {}
    plan = Plan(status={})
    conds = _Conditions(prev.get("conditions"), obs.generation, obs.now)
    model = dict(prev.get("model") or {})
    rollback = dict(prev.get("rollback") or {})
    prev_health = dict(prev.get("health") or {})
    dep = obs.deployment
    last_good = last_good_target(spec, prev, obs.recorded_last_good)

    opt_state, optimization = _optimization(spec, obs, plan, conds)
    runtime, runtime_reason = tuning.choose_runtime(spec, optimization)
    requested = dataclasses.replace(target_from_spec(spec), runtime=runtime)

    # Which target the serving Deployment runs.
    rolled_back = _latched(prev.get("conditions"), st.STALLED, (Reason.ROLLED_BACK,), obs.generation, "True")
    current = dep.target or _target_from_status(prev)
    if rolled_back and last_good is not None:
        target = last_good
    elif opt_state in ("none", "published"):
        target = requested
        rolled_back = None
    else:
        target, rolled_back = current, None
    # A target is "rolling out" until it has been good once: only then can its failure mean a failed rollout.
    new_version = (target == requested and last_good is not None
                   and (last_good.version, last_good.image, last_good.runtime)
                   != (requested.version, requested.image, requested.runtime))
    canary = _canary(spec, obs, prev, requested, last_good, new_version and target == requested)
    if canary is not None:
        plan.events.extend(canary.events)
    if canary is not None and not canary.promote:
        target = last_good        # the serving Deployment keeps the last good version while the canary runs
    rolling = target == requested and (last_good is None or new_version)

    minimum = minimum_ready(spec)
    if canary is not None and not canary.promote and canary.split.stable is not None:
        # The canary runs the rest of spec.serving.replicas (in a rollback's pass too: the stable Deployment
        # grows back only once this plan is applied).
        minimum = canary.split.stable
    pods, _ = cn.by_track(obs.pods)
    health = hl.summarize(pods, ready=dep.ready, desired=dep.replicas, minimum=minimum, model_state=obs.model_state,
                           model_message=obs.model_message)
    matches = target is not None and dep.exists and dep.target == target

    # Failed checks of the version rolling out count only on scheduled checks, and restart with a new target.
    failures = int(prev_health.get("consecutiveFailures") or 0)
    if target is None or target != _target_from_status(prev):
        failures = 0
    if obs.interval_check and target is not None:
        # The model probe reads ready pods of the target only, so a failed model state is the target's.
        failing = health.failing(target.version) or health.model_failed
        failures = failures + 1 if matches and failing else 0

    failure = _rollout_failure(spec, dep, health, target, failures) if matches and rolling and not rolled_back \
        else None
    if canary is not None and canary.failure is not None:
        failure = canary.failure
    stalled = None
    # A failed canary is always removed: the stable version never stopped serving (monitoring.rollback governs
    # the rolling strategy and the rollout after a promotion).
    if failure is not None and new_version and (spec.monitoring.rollback or (canary and canary.failure)):
        reason, message = failure
        text = (f"version {requested.version} ({requested.image}) failed its rollout: {reason}: {message}; "
                f"rolled back to version {last_good.version} ({last_good.image})")
        stalled = (Reason.ROLLED_BACK, text + "; change the spec (e.g. a new spec.model.version) to try again")
        plan.rolled_back = True
        plan.events.append((WARNING, "RolledBack", text))
        model["failedVersion"] = requested.version
        rollback.update(count=int(rollback.get("count") or 0) + 1, fromVersion=requested.version,
                        toVersion=last_good.version, lastReason=reason, lastMessage=message[:2000],
                        lastTime=st.timestamp(obs.now))
        target, failures, matches = last_good, 0, dep.target == last_good
        rolled_back = True
    elif failure is not None:
        reason, message = failure
        why = "monitoring.rollback is false" if last_good is not None and new_version else \
            "there is no earlier good version to roll back to"
        stalled = (reason, f"version {requested.version} failed its rollout: {message}; not rolled back "
                           f"({why}); fix the spec and apply it again")
        model["failedVersion"] = requested.version
        if _cond(prev.get("conditions"), st.STALLED).get("status") != "True":    # on the transition only
            plan.events.append((WARNING, reason, stalled[1]))
    elif rolled_back:
        old = _cond(prev.get("conditions"), st.STALLED)
        stalled = (Reason.ROLLED_BACK, old.get("message") or "rolled back")
    elif opt_state == "failed":
        c = _cond(conds.items, st.OPTIMIZED)
        serving = f"; version {current.version} keeps serving" if current else ""
        stalled = (c.get("reason"), f"{c.get('message')}{serving}; change the spec (e.g. the gates or "
                                    f"spec.model.version) to try again")

    # Rollout bookkeeping for the target the Deployment is set to.
    complete = matches and dep.rollout_complete
    ready_target = sum(1 for p in pods if target is not None and is_ready_pod_of(p, target))
    serving_ok = complete and ready_target >= minimum and not health.failing(target.version) \
        and obs.model_state in (None, "AVAILABLE")
    if target is not None and target != _target_from_status(prev) and not plan.rolled_back:
        plan.events.append((NORMAL, "RolloutStarted", f"rolling out version {target.version} ({target.image})"))
    if serving_ok and target == requested and failure is None and not rolled_back:
        if last_good != target or model.get("servingVersion") != target.version:
            plan.events.append((NORMAL, "RolloutCompleted",
                                f"version {target.version} serves on {ready_target} ready replicas"))
        model["lastGoodVersion"] = target.version
        # Pruned by the API server (and by apply.prune_status) when the installed CRD lacks these fields.
        model["lastGoodImage"], model["lastGoodUri"] = target.image, target.uri
        model["lastGoodRuntime"] = target.runtime
        last_good = target
    plan.last_good = last_good
    if complete and target is not None:
        model["servingVersion"] = target.version
    plan.target = target
    model["requestedVersion"] = requested.version
    if target is not None:
        model["uri"] = target.uri
    if opt_state == "failed":
        model["failedVersion"] = requested.version

    # Conditions.
    scaled_to_zero = spec.autoscaling is None and spec.serving.replicas == 0
    ready_reason, ready_message = _not_ready(spec, opt_state, conds, target, matches, dep, health, ready_target,
                                             minimum, stalled)
    if canary is not None and canary.running and stalled is None:
        ready_reason = Reason.CANARY_HOLDING if canary.block["phase"] == cn.HOLDING else Reason.CANARY_PROGRESSING
        ready_message = f"canary version {requested.version}: {canary.block['message']}"
    ready = stalled is None or rolled_back
    # Ready only for the version asked for, or for the rolled-back one (then with Degraded and Stalled).
    ready = ready and target is not None and (target == requested or bool(rolled_back)) \
        and (serving_ok or (scaled_to_zero and complete))
    if ready:
        if scaled_to_zero:
            conds.set(st.READY, True, Reason.SCALED_TO_ZERO,
                      f"version {target.version} is deployed with spec.serving.replicas 0")
        else:
            extra = f" (rolled back from version {requested.version})" if rolled_back else ""
            conds.set(st.READY, True, health.reason if health.reason in (Reason.MODEL_AVAILABLE,) else
                      Reason.REPLICAS_READY, f"version {target.version} serves on {ready_target} ready "
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

    available = target is not None and dep.exists and health.ready >= minimum and minimum > 0 \
        and obs.model_state in (None, "AVAILABLE")
    if available:
        conds.set(st.AVAILABLE, True, Reason.REPLICAS_READY, health.message)
    elif scaled_to_zero and dep.exists:
        conds.set(st.AVAILABLE, False, Reason.SCALED_TO_ZERO, "spec.serving.replicas is 0: nothing serves")
    elif target is None or not dep.exists:
        conds.set(st.AVAILABLE, False, ready_reason, f"no serving Deployment yet: {ready_message}")
    else:
        conds.set(st.AVAILABLE, False, health.reason if health.reason != Reason.REPLICAS_READY
                  else Reason.REPLICAS_NOT_READY, health.message)

    metrics_block = _slo(spec, obs, prev, target, plan)
    failing_pods = health.failing()
    lost = model.get("lastGoodVersion") is not None and matches and complete and health.ready < minimum
    if stalled is not None:
        conds.set(st.DEGRADED, True, stalled[0], stalled[1])
    elif failing_pods:
        conds.set(st.DEGRADED, True, failing_pods[0].reason, health.message)
    elif lost:
        conds.set(st.DEGRADED, True, health.reason if health.reason != Reason.REPLICAS_READY
                  else Reason.MINIMUM_REPLICAS_UNAVAILABLE, health.message)
    elif (metrics_block or {}).get("slo") == slomod.VIOLATED:
        # Degraded only: Ready stays True (the version answers; kstatus reads Current, Argo CD Degraded).
        conds.set(st.DEGRADED, True, Reason.SLO_VIOLATED, metrics_block["message"])
    else:
        conds.set(st.DEGRADED, False, Reason.AS_EXPECTED, "no problems found")

    # Health summary (lastCheckTime moves only when the state changes: no writes while nothing changes).
    if not dep.exists:
        state = UNKNOWN
    elif failing_pods or lost or (complete and not available and minimum > 0):
        state = UNHEALTHY
    else:
        state = HEALTHY if available else UNKNOWN        # still coming up: not known yet
    new_health = {"state": state, "consecutiveFailures": failures, "message": health.message if dep.exists else
                  "no serving Deployment yet", "restarts": health.restarts}
    if obs.model_state is not None:
        new_health["modelState"] = obs.model_state
    if prev_health.get("state") != state:
        new_health["lastCheckTime"] = new_health["lastTransitionTime"] = st.timestamp(obs.now)
        if prev_health.get("state") not in (None, UNKNOWN) and state != UNKNOWN:   # not for first sightings
            plan.events.append((NORMAL if state == HEALTHY else WARNING, f"Health{state}", new_health["message"]))
    else:
        for key in ("lastCheckTime", "lastTransitionTime"):
            if prev_health.get(key):
                new_health[key] = prev_health[key]

    status = {"observedGeneration": obs.generation, "phase": st.phase(conds.items), "conditions": conds.items,
              "selector": names.selector_string(spec.name), "model": model}
    if optimization:
        status["optimization"] = optimization
    if target is not None:
        batching, batching_status = tuning.serving_batching(spec, optimization, target.runtime)
        plan.serving = dataclasses.replace(spec, serving=dataclasses.replace(spec.serving, batching=batching))
        status["serving"] = {
            "deployment": names.serving_name(spec.name), "service": names.serving_name(spec.name),
            "image": target.image, "version": target.version, "runtime": target.runtime,
            "runtimeReason": runtime_reason if target == requested else
            f"version {target.version} is served as it was last good ({target.runtime})",
            "replicas": dep.status_replicas,
            "readyReplicas": dep.ready, "updatedReplicas": dep.updated, "availableReplicas": dep.available,
            "restUrl": names.rest_url(spec.name, spec.namespace, spec.model.name),
            "grpcAddress": names.grpc_address(spec.name, spec.namespace)}
        if batching_status:
            status["serving"]["batching"] = batching_status
        if metrics_block:
            status["serving"]["metrics"] = metrics_block
    if rollback:
        status["rollback"] = rollback
    status["health"] = new_health
    if canary is not None:
        rollout, plan.canary = canary.block, canary
    else:
        rollout, events = cn.settle(prev.get("rollout"), requested)
        plan.events.extend(events)
    if rollout:
        status["rollout"] = rollout
    plan.status = status
    return plan


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


def _slo(spec: ModelDeploymentSpec, obs: Observed, prev: dict, target: ServingTarget | None, plan: Plan) \
        -> dict | None:
    """status.serving.metrics of the version the Deployment is set to (None without an SLO), and the Event of a
    verdict change: a Warning when it becomes Violated, a Normal one when it stops being Violated."""
    if spec.monitoring.slo is None or target is None:
        return None
    stored = (prev.get("serving") or {}).get("metrics")
    block, transition = slomod.evaluate(spec.monitoring.slo, obs.serving_metrics, stored, target.version, obs.now)
    if transition is not None and block is not None:
        old, new = transition
        if new == slomod.VIOLATED:
            plan.events.append((WARNING, Reason.SLO_VIOLATED, block["message"]))
        elif old == slomod.VIOLATED:
            plan.events.append((NORMAL, Reason.SLO_MET if new == slomod.MET else Reason.SLO_NO_VERDICT,
                                block["message"]))
    return block


def _not_ready(spec, opt_state, conds, target, matches, dep, health, ready_target, minimum, stalled):
    """Reason and message of Ready=False (also Reconciling's while in progress): the most useful one."""
    version = spec.model.version
    if stalled is not None:
        return stalled
    if opt_state == "wait":
        c = _cond(conds.items, st.OPTIMIZED)
        serving = f"; version {target.version} keeps serving" if target is not None else ""
        return c.get("reason") or Reason.OPTIMIZATION_PENDING, f"{c.get('message')}{serving}"
    if target is None:
        return Reason.OPTIMIZATION_PENDING, f"version {version} is not available yet"
    if not matches:
        return Reason.ROLLOUT_IN_PROGRESS, f"rolling out version {target.version} ({target.image})"
    if not dep.rollout_complete:
        return (Reason.ROLLOUT_IN_PROGRESS if health.reason in (Reason.REPLICAS_READY, Reason.MODEL_AVAILABLE)
                else health.reason,
                f"rolling out version {target.version}: {dep.updated} updated, {dep.available} available of "
                f"{dep.replicas}; {health.message}")
    if ready_target < minimum:
        return (health.reason if health.reason not in (Reason.REPLICAS_READY, Reason.MODEL_AVAILABLE)
                else Reason.REPLICAS_NOT_READY, f"version {target.version}: {health.message}")
    if health.failing(target.version):
        return health.reason, health.message
    if dep.exists and health.model_state not in (None, "AVAILABLE"):
        return Reason.MODEL_NOT_AVAILABLE, health.message
    return Reason.ROLLOUT_IN_PROGRESS, f"waiting for version {target.version}: {health.message}"


def condition_reason(status: dict | None, type_: str) -> str | None:
    """The reason of condition `type_` in `status` when it is True."""
    c = _cond((status or {}).get("conditions"), type_)
    return c.get("reason") if c.get("status") == "True" else None


def stalled_status(status: dict, generation: int, reason: str, message: str, now: str) -> dict:
    """`status` (what decide planned) with Stalled=True `reason`: the children could not be written (a name
    taken by an object this ModelDeployment does not control, or a child the API server refused); what already
    serves is left as it is."""
    conds = _Conditions(status.get("conditions"), generation, now)
    conds.set(st.READY, False, reason, message)
    conds.set(st.STALLED, True, reason, message)
    conds.set(st.RECONCILING, False, reason, "stalled: nothing more happens until the cause is fixed")
    conds.set(st.DEGRADED, True, reason, message)
    return dict(status, conditions=conds.items, phase=st.phase(conds.items))


def invalid_spec_status(prev: dict, generation: int, error: Exception, now: str) -> dict:
    """Status for a spec that cannot be parsed: Stalled=True InvalidSpec; children and figures left alone."""
    conds = _Conditions((prev or {}).get("conditions"), generation, now)
    message = f"{error}; fix the spec and apply it again (the children are left as they are)"
    conds.set(st.READY, False, Reason.INVALID_SPEC, message)
    conds.set(st.STALLED, True, Reason.INVALID_SPEC, message)
    conds.set(st.RECONCILING, False, Reason.INVALID_SPEC, "stalled: nothing more happens until the spec changes")
    conds.set(st.DEGRADED, True, Reason.INVALID_SPEC, message)
    status = {k: v for k, v in (prev or {}).items() if k not in ("kopf",)}
    status.update(observedGeneration=generation, conditions=conds.items, phase=st.phase(conds.items))
    return status
