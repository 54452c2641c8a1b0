"""Pure views of the live children: what the optimizer Job did, what the Deployment runs and how its rollout goes.

The reconciler reads objects through `apply` and hands the plain dicts to these functions; nothing here talks to
the API, so every decision can be tested with dicts.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from modeldeploy.api.names import LABEL_VERSION
from modeldeploy.api.status import Reason
from modeldeploy.contracts import annotations
from modeldeploy.contracts import report as contract
from modeldeploy.contracts.report import INT_FIELDS, REPORT_FIELDS, parse_message
from modeldeploy.resources import deployment as dep_builder
from modeldeploy.resources import job as job_builder
from modeldeploy.resources.deployment import ServingTarget

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
# The condition reason of each gate (contracts/report.py names them).
GATE_REASONS = {contract.GATE_MAX_ACCURACY_DROP: Reason.ACCURACY_GATE_FAILED,
                contract.GATE_MIN_COMPRESSION: Reason.COMPRESSION_GATE_FAILED}


@dataclass(frozen=True)
class JobView:
    """The optimizer Job of one (version, hash): its state and what its pod reported."""
    name: str
    state: str                       # running | succeeded | failed
    report: dict | None = None       # the optimizer's JSON (termination message), success or failure
    reason: str = ""                 # failure: the optimizer's error reason or the Job's condition reason
    message: str = ""                # failure: what went wrong, for the Optimized/Stalled conditions
    start_time: str | None = None
    completion_time: str | None = None


@dataclass(frozen=True)
class DeploymentView:
    """The live serving Deployment, reduced to what the decisions need."""
    exists: bool = False
    target: ServingTarget | None = None
    generation: int = 0
    observed_generation: int = 0
    replicas: int = 0                # spec.replicas (the HPA's choice while autoscaling)
    status_replicas: int = 0
    updated: int = 0
    ready: int = 0
    available: int = 0
    progressing: dict = field(default_factory=dict)   # the Progressing condition

    @property
    def rollout_complete(self) -> bool:
        """What `kubectl rollout status` waits for: every replica on the new template and available."""
        return (self.exists and self.observed_generation >= self.generation
                and self.updated >= self.replicas and self.status_replicas == self.updated
                and self.available >= self.updated)

    @property
    def deadline_exceeded(self) -> bool:
        return (self.observed_generation >= self.generation and self.progressing.get("status") == "False"
                and self.progressing.get("reason") == "ProgressDeadlineExceeded")


def _conditions(obj: dict) -> dict[str, dict]:
    return {c.get("type"): c for c in ((obj.get("status") or {}).get("conditions") or ())}


def _terminated(pod: dict) -> dict:
    for c in (pod.get("status") or {}).get("containerStatuses") or ():
        if c.get("name") == job_builder.CONTAINER:
            return ((c.get("state") or {}).get("terminated")) or ((c.get("lastState") or {}).get("terminated")) or {}
    return {}


def _newest(pods: list[dict]) -> list[dict]:
    return sorted(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "", reverse=True)


def job_view(job: dict, pods: list[dict]) -> JobView:
    """Interpret a Job and its pods (any order) into a `JobView`."""
    meta, status = job.get("metadata") or {}, job.get("status") or {}
    conds = _conditions(job)
    name = meta.get("name", "")
    times = {"start_time": status.get("startTime"), "completion_time": status.get("completionTime")}
    if conds.get("Complete", {}).get("status") == "True" or conds.get("SuccessCriteriaMet", {}).get("status") == "True":
        report = None
        for pod in _newest(pods):
            if (pod.get("status") or {}).get("phase") == "Succeeded":
                report = parse_message(_terminated(pod).get("message"))
                if report is not None:
                    break
        return JobView(name=name, state=SUCCEEDED, report=report, **times)
    failed = conds.get("Failed") or conds.get("FailureTarget") or {}
    if failed.get("status") == "True":
        report, reason, message = None, failed.get("reason") or "JobFailed", failed.get("message") or ""
        for pod in _newest(pods):
            term = _terminated(pod)
            if not term:
                continue
            parsed = parse_message(term.get("message"))
            error = contract.error_of(parsed)
            if error:
                report = parsed
                reason, message = error.get(contract.REASON) or reason, error.get(contract.MESSAGE) or message
            else:
                tail = (term.get("message") or "").strip().splitlines()[-5:]
                message = f"exit code {term.get('exitCode')}" + (": " + " | ".join(tail) if tail else "")
            break
        # Kubernetes sets no completionTime on a failed Job; the Failed condition's time is when it ended.
        ended = times["completion_time"] or failed.get("lastTransitionTime")
        return JobView(name=name, state=FAILED, report=report, reason=reason, message=message[:2000],
                       start_time=times["start_time"], completion_time=ended)
    return JobView(name=name, state=RUNNING, **times)


def failure_reason(view: JobView) -> str:
    """Condition reason for a failed optimization: the first gate the optimizer's error record names, else
    JobFailed."""
    gates = contract.failed_gates(view.report)
    return GATE_REASONS[gates[0]] if gates else Reason.JOB_FAILED


# Per runtime: status key -> the report's latency key (prefixed with the runtime's artefact name).
RUNTIME_LATENCY = {"latencyMs": "B1", "latencyP99Ms": "B1P99", "latencyB32Ms": "B32", "throughput": "ThroughputB32"}
RUNTIME_ARTEFACT = {"tensorflow": "savedModel", "tflite": "tflite"}
# What GPU pods of runtime tensorflow pull when the version has it: the SavedModel computing in float16. Its
# accuracy is measured in the Job, its speed is not (only a GPU could say): no latency figures.
GPU_PULL = "tensorflow-gpu"
REPORT_SECTION = {"tflite": "tflite", GPU_PULL: "gpuFloat16"}
# status.optimization's figures of the runtime that serves (`for_runtime`), from status.optimization.runtimes.
SERVING_FIGURES = {"optimizedLatencyMs": "latencyMs", "optimizedLatencyP99Ms": "latencyP99Ms",
                   "optimizedLatencyB32Ms": "latencyB32Ms", "optimizedThroughput": "throughput",
                   "optimizedAccuracy": "accuracy", "accuracyDrop": "accuracyDrop",
                   "compressionRatio": "compressionRatio", "compressedBytes": "compressedBytes",
                   "optimizedBytes": "bytes"}
# An artefact's accuracy figures, named as report["tflite"] names them; the SavedModel's are at the report's top
# level, one under another name. Sizes come from what each runtime pulls (report["download"]).
ARTEFACT_FIGURES = ("accuracy", "accuracyDrop")
SAVED_MODEL_NAMES = {"accuracy": "optimizedAccuracy"}


def optimization_record(report: dict | None) -> dict:
    """The report's figures in the shape of status.optimization (missing figures are left out), with the
    figures of each runtime the version can be served with (`for_runtime` puts those that serve on top)."""
    report = report or {}
    out = _scalar_figures(report)
    latency, download = report.get("latency") or {}, report.get("download") or {}
    for status_key, value in (("baselineLatencyB32Ms", latency.get("baselineB32")),
                              ("baselineLatencyP99Ms", latency.get("baselineB1P99")),
                              ("baselineThroughput", latency.get("baselineThroughputB32"))):
        if value is not None:
            out[status_key] = float(value)
    if latency.get("threads") is not None:
        out["latencyThreads"] = int(latency["threads"])
    # Sizes are what a pod pulls against the model as the user stored it (reports before exportCompressionRatio
    # carried two re-exports' sizes at the top level; their download figures say the same as newer ones).
    for status_key, key in (("originalBytes", "sourceBytes"), ("originalCompressedBytes", "sourceCompressedBytes")):
        if download.get(key) is not None:
            out[status_key] = int(download[key])
    runtimes = {name: _runtime_figures(report, name, pulled, latency)
                for name, pulled in (download.get("runtimes") or {}).items()
                if name in RUNTIME_ARTEFACT or name == GPU_PULL}
    if runtimes:
        out["runtimes"] = runtimes
    if report.get("quantize"):
        out["quantization"] = str(report["quantize"])
    onnx = report.get("onnx") or {}
    if onnx:
        out["onnx"] = _onnx_record(onnx)
    found = report.get("search") or {}
    if found.get("winner"):
        out["search"] = _search_record(found)
    return out


def _scalar_figures(report: dict) -> dict:
    """The report's top-level figures of REPORT_FIELDS, typed as status.optimization declares them."""
    out = {}
    for key in REPORT_FIELDS:
        value = report.get(key)
        if value is None or isinstance(value, bool):
            continue
        if key in INT_FIELDS:
            out[key] = int(value)
        elif key in ("metric", "uri"):
            out[key] = str(value)
        else:
            out[key] = float(value)
    return out


def _runtime_figures(report: dict, name: str, pulled: dict, latency: dict) -> dict:
    """status.optimization.runtimes[name]: the latency, accuracy and download figures of what that runtime's
    pods pull (`pulled`: report["download"]["runtimes"][name]), and its batch curve."""
    prefix = RUNTIME_ARTEFACT.get(name)     # None for tensorflow-gpu: not timed
    figures = {key: float(latency[prefix + suffix]) for key, suffix in RUNTIME_LATENCY.items()
               if prefix and latency.get(prefix + suffix) is not None}
    artefact = report if name == "tensorflow" else report.get(REPORT_SECTION[name]) or {}
    for key in ARTEFACT_FIGURES:
        value = artefact.get(SAVED_MODEL_NAMES.get(key, key) if name == "tensorflow" else key)
        if value is not None:
            figures[key] = float(value)
    figures.update(bytes=int(pulled["bytes"]), compressedBytes=int(pulled["compressedBytes"]),
                   compressionRatio=float(pulled["ratio"]))
    curve = (report.get("batchCurve") or {}).get(name)
    if curve:
        figures["batchCurve"] = [{"batchSize": int(b), "latencyMs": float(p50), "latencyP99Ms": float(p99)}
                                 for b, p50, p99 in curve]
    return figures


def _onnx_record(onnx: dict) -> dict:
    """status.optimization.onnx: model.onnx's figures, or why it was skipped."""
    if "skipped" in onnx:
        return {"skipped": str(onnx["skipped"])[:500]}
    return {key: (int(onnx[name]) if key.endswith("ytes") else float(onnx[name]))
            for key, name in (("bytes", "bytes"), ("compressedBytes", "compressedBytes"),
                              ("agreement", "agreement"), ("savedModelAgreement", "savedModelAgreement"),
                              ("latencyMs", "latencyMsB1")) if onnx.get(name) is not None}


def _search_record(found: dict) -> dict:
    """status.optimization.search: the objective, how many candidates were tried, and the winner."""
    winner = found["winner"]
    return {"objective": str(found.get("objective")), "candidates": int(found.get("candidates") or 0),
            "tried": int(found.get("tried") or 0),
            "winner": {"sparsity": float(winner["sparsity"]), "mode": str(winner["mode"]),
                       "runtime": str(winner["runtime"])}}


def runtimes_of(record: dict) -> set[str]:
    """The runtimes a published version can be served with (a record from before runtimes: its SavedModel)."""
    return (set(record.get("runtimes") or {}) - {GPU_PULL}) or {"tensorflow"}


def for_runtime(record: dict, runtime: str, gpus: int = 0) -> dict:
    """status.optimization with the latency and download figures of the runtime that serves on top: exactly
    what that runtime's pods pull and how fast that artefact ran (latencyRuntime names it; tensorflow-gpu, the
    float16-compute SavedModel GPU pods pull, has no latency: it was not measured on a GPU)."""
    if runtime == "tensorflow" and gpus > 0 and GPU_PULL in (record.get("runtimes") or {}):
        runtime = GPU_PULL
    figures = (record.get("runtimes") or {}).get(runtime)
    if figures is None:
        return record
    out = {k: v for k, v in record.items() if k not in SERVING_FIGURES}
    out.update({key: figures[name] for key, name in SERVING_FIGURES.items() if name in figures})
    out["latencyRuntime"] = runtime
    return out


def target_of_template(template: dict) -> ServingTarget | None:
    """The target a Deployment's pod template (or a pod) serves, from the annotation the operator wrote on it;
    None when it is not ours."""
    recorded = (template.get("metadata") or {}).get("annotations") or {}
    if annotations.SERVING_TARGET in recorded:
        data = annotations.read_target(recorded, annotations.SERVING_TARGET)
        return ServingTarget(**data) if data else None
    return _target_of_args(template)


def _target_of_args(template: dict) -> ServingTarget | None:
    """Compatibility: templates written by operators before the serving-target annotation (0.1.0), and the pods
    made from them, carry the target only in the pull init container's arguments. The first reconcile after an
    upgrade rewrites each template (which rolls its pods); remove once upgrades from 0.1.0 are no longer
    supported."""
    meta, spec = template.get("metadata") or {}, template.get("spec") or {}
    version = (meta.get("labels") or {}).get(LABEL_VERSION)
    image = next((c.get("image") for c in spec.get("containers") or () if c.get("name") == dep_builder.CONTAINER),
                 None)
    init = next((c for c in spec.get("initContainers") or () if c.get("name") == dep_builder.INIT_CONTAINER), {})
    args = init.get("args") or []
    if version is None or not str(version).isdigit() or image is None or not args:
        return None
    runtime = args[args.index("--runtime") + 1] if "--runtime" in args[:-1] else "tensorflow"
    return ServingTarget(version=int(version), image=image, uri=args[0], runtime=runtime)


def deployment_view(dep: dict | None) -> DeploymentView:
    """Interpret the live Deployment (None when it does not exist)."""
    if not dep:
        return DeploymentView()
    meta, spec, status = dep.get("metadata") or {}, dep.get("spec") or {}, dep.get("status") or {}
    return DeploymentView(
        exists=True,
        target=target_of_template(spec.get("template") or {}),
        generation=int(meta.get("generation") or 0),
        observed_generation=int(status.get("observedGeneration") or 0),
        replicas=int(spec.get("replicas") if spec.get("replicas") is not None else 1),
        status_replicas=int(status.get("replicas") or 0),
        updated=int(status.get("updatedReplicas") or 0),
        ready=int(status.get("readyReplicas") or 0),
        available=int(status.get("availableReplicas") or 0),
        progressing=_conditions(dep).get("Progressing") or {},
    )


def recorded_last_good(service: dict | None) -> ServingTarget | None:
    """The rollback target recorded on the serving Service (see contracts/annotations.py)."""
    data = annotations.read_target(((service or {}).get("metadata") or {}).get("annotations"),
                                   annotations.LAST_GOOD)
    return ServingTarget(**data) if data else None


def is_ready_pod_of(pod: dict, target: ServingTarget) -> bool:
    """True when the pod runs `target` (version label, TF Serving image, runtime) and is Ready."""
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp") or (meta.get("labels") or {}).get(LABEL_VERSION) != str(target.version):
        return False
    images = [c.get("image") for c in (pod.get("spec") or {}).get("containers") or ()
              if c.get("name") == dep_builder.CONTAINER]
    if images and images[0] != target.image:
        return False
    runs = target_of_template(pod)
    if runs is not None and runs.runtime != target.runtime:
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or ())
