"""Phase 1 of decide: the optimization of the requested version. Pure.

`optimization(spec, obs)` reads the stored status.optimization, the latched Optimized condition and the
optimizer Job (its report, or its AlreadyPublished answer), and returns a frozen `Optimization`: the state, the
new status.optimization, the conditions with Optimized set, the Events, whether to create the Job, and the
runtime the version is served with (chosen once here from the record; the later phases read it).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from modeldeploy.api import status as st
from modeldeploy.api.spec import ModelDeploymentSpec, optimization_hash, source_uri
from modeldeploy.api.status import EventType, Reason, event
from modeldeploy.controller import tuning
from modeldeploy.controller.decide.base import Conditions, Observed, OptimizationState, cond, latched
from modeldeploy.controller.observe import (FAILED, RUNNING, SUCCEEDED, JobView, failure_reason, for_runtime,
                                            optimization_record, runtimes_of)
from modeldeploy.resources import job as job_builder

OPTIMIZATION_FAILURES = (Reason.JOB_FAILED, Reason.ACCURACY_GATE_FAILED, Reason.COMPRESSION_GATE_FAILED)


@dataclass(frozen=True)
class Optimization:
    """The outcome of phase 1."""
    state: OptimizationState
    record: dict                  # status.optimization (for a published version: the served runtime's figures)
    conditions: list              # the stored conditions with Optimized set
    events: tuple = ()
    create_job: bool = False
    runtime: tuning.RuntimeChoice | None = None     # set by optimization(), from `record`

    @property
    def optimized(self) -> dict:
        """The Optimized condition as this phase set it."""
        return cond(self.conditions, st.OPTIMIZED)


def optimization(spec: ModelDeploymentSpec, obs: Observed) -> Optimization:
    """Decide the optimization step: nothing to do, published, waiting for its Job, or failed; with the runtime."""
    opt = _optimization(spec, obs)
    if opt.runtime is not None:       # chosen already: a published version's figures are those of its runtime
        return opt
    return dataclasses.replace(opt, runtime=tuning.choose_runtime(spec, opt.record))


def _optimization(spec: ModelDeploymentSpec, obs: Observed) -> Optimization:
    status = obs.status or {}
    conds = Conditions(status.get("conditions"), obs.generation, obs.now)
    prev = dict(status.get("optimization") or {})
    if spec.optimization is None:
        conds.set(st.OPTIMIZED, True, Reason.NOT_REQUESTED,
                  "spec.optimization is not set: the model is served as it is")
        return Optimization(OptimizationState.NONE, {}, conds.items)
    mine = prev.get("version") == spec.model.version and prev.get("hash") == optimization_hash(spec)
    if mine and prev.get("uri"):
        return _published_before(spec, prev, conds)
    latch = latched(conds.items, st.OPTIMIZED, OPTIMIZATION_FAILURES, obs.generation, "False")
    if mine and latch:
        # This generation already failed: say so again, and never start its Job a second time.
        conds.set(st.OPTIMIZED, False, latch["reason"], latch.get("message") or "the optimization failed")
        return Optimization(OptimizationState.FAILED, prev, conds.items)
    return _from_job(spec, obs, prev, conds)


def _published_before(spec: ModelDeploymentSpec, prev: dict, conds: Conditions) -> Optimization:
    """The version was published by an earlier pass: keep its record and the condition that says so."""
    optimized = cond(conds.items, st.OPTIMIZED)
    runtime = tuning.choose_runtime(spec, prev)
    if runtime.name in runtimes_of(prev):       # else _servable says why it cannot serve
        if optimized.get("status") != "True":       # e.g. the condition was lost: say it again
            conds.set(st.OPTIMIZED, True, Reason.JOB_SUCCEEDED,
                      f"version {spec.model.version} is published at {prev['uri']}")
        else:
            conds.set(st.OPTIMIZED, True, optimized["reason"], optimized.get("message") or "published")
    return _servable(spec, prev, conds, runtime=runtime)


def _from_job(spec: ModelDeploymentSpec, obs: Observed, prev: dict, conds: Conditions) -> Optimization:
    """`_job_outcome`, with JobStarted for a Job the stored status does not name yet: on the pass that creates it,
    or on the first pass that reports it (a new object's first pass puts its status and Events off, reconcile.py),
    whatever the Job has done by then."""
    name = job_builder.job_name(spec)
    outcome = _job_outcome(spec, obs, prev, conds)
    if prev.get("job") == name or (obs.job is None and not outcome.create_job):
        return outcome
    started = event(EventType.NORMAL, Reason.JOB_STARTED,
                    f"created Job {name} to optimize version {spec.model.version}")
    return dataclasses.replace(outcome, events=(started, *outcome.events))


def _job_outcome(spec: ModelDeploymentSpec, obs: Observed, prev: dict, conds: Conditions) -> Optimization:
    """From the Job of (version, hash), or from storage when there is none: wait, publish, fail or start one."""
    version, name = spec.model.version, job_builder.job_name(spec)
    job, published, published_report = obs.job, obs.published, obs.published_report
    if job is not None and job.state == FAILED and job.reason == "AlreadyPublished":
        # The Job found the version complete; its termination message carries that version's report.json, so
        # the operator needs no storage access (nor the tenant's Secret) to adopt it.
        if job.report and job.report.get("uri"):
            published_report = {k: v for k, v in job.report.items() if k not in ("ok", "error")}
        job, published = None, True
    record = {"job": name, "version": version, "hash": optimization_hash(spec)}
    if job is not None and job.start_time:
        record["startTime"] = job.start_time
    if job is not None and job.state == RUNNING:
        conds.set(st.OPTIMIZED, False, Reason.JOB_RUNNING, f"Job {name} is optimizing version {version}")
        return Optimization(OptimizationState.WAIT, record, conds.items)
    if job is not None and job.state == SUCCEEDED:
        return _job_succeeded(spec, job, obs.published_report, record, conds)
    if job is not None and job.state == FAILED:
        return _job_failed(job, record, conds)
    if published:
        return _already_published(spec, published_report, record, conds)
    conds.set(st.OPTIMIZED, False, Reason.JOB_RUNNING, f"Job {name} is optimizing version {version}")
    return Optimization(OptimizationState.WAIT, record, conds.items, create_job=True)


def _job_succeeded(spec: ModelDeploymentSpec, job: JobView, published_report: dict | None, record: dict,
                   conds: Conditions) -> Optimization:
    """The Job published the version: its figures from the termination message, else from report.json."""
    version = spec.model.version
    report = job.report if job.report and job.report.get("ok", True) else published_report
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
    return _servable(spec, record, conds,
                     (event(EventType.NORMAL, Reason.JOB_SUCCEEDED, f"Job {record['job']}: {message}"),))


def _job_failed(job: JobView, record: dict, conds: Conditions) -> Optimization:
    """The Job failed: which gate (from the optimizer's message, see observe.failure_reason) or the Job itself."""
    reason = failure_reason(job)
    message = f"Job {record['job']} failed: {job.reason}: {job.message}".rstrip(": ")
    record["message"] = message[:2000]
    if job.completion_time:
        record["completionTime"] = job.completion_time
    conds.set(st.OPTIMIZED, False, reason, message)
    return Optimization(OptimizationState.FAILED, record, conds.items, (event(EventType.WARNING, reason, message),))


def _already_published(spec: ModelDeploymentSpec, published_report: dict | None, record: dict,
                       conds: Conditions) -> Optimization:
    """Storage (or the Job) says the version is already published: serve it without optimizing again."""
    version = spec.model.version
    figures = optimization_record(published_report)
    figures.setdefault("uri", source_uri(spec, version))
    record.update(figures)
    message = (f"version {version} is already published at {record['uri']}: serving it without optimizing "
               f"again (raise spec.model.version to optimize with the current settings)")
    conds.set(st.OPTIMIZED, True, Reason.ALREADY_PUBLISHED, message)
    return _servable(spec, record, conds)


def _servable(spec: ModelDeploymentSpec, record: dict, conds: Conditions, events: tuple = (),
              runtime: tuning.RuntimeChoice | None = None) -> Optimization:
    """A published version, with the figures of the runtime the spec serves it with (`runtime`: when chosen
    already, from this record); FAILED (nothing rolls out, what serves keeps serving) when the version has no
    artefact for that runtime. for_runtime keeps what choose_runtime reads, so the choice holds for its record."""
    runtime = runtime or tuning.choose_runtime(spec, record)
    if runtime.name in runtimes_of(record):
        return Optimization(OptimizationState.PUBLISHED, for_runtime(record, runtime.name, spec.serving.gpus),
                            conds.items, events, runtime=runtime)
    conds.set(st.OPTIMIZED, False, Reason.RUNTIME_UNAVAILABLE,
              f"version {spec.model.version} has no artefact for spec.serving.runtime {runtime.name} (the TFLite "
              f"converter could not convert this model, or model.tflite failed the gates; the optimizer Job's log "
              f"and report.json say why): serve it with runtime tensorflow or auto")
    return Optimization(OptimizationState.FAILED, record, conds.items, events, runtime=runtime)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{float(value):.4f}"
