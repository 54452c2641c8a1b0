"""The optimization Job: `modeldeploy optimize` for one model version, named `<name>-opt-<N>-<hash>`.

The name is deterministic (version + hash of the optimization spec), so a restarted operator finds the Job it
already created instead of starting a second one, and any change to what the Job would do gets a new name.
Storage credentials reach the container only through `envFrom` the storageSecret: never in args.
"""
from __future__ import annotations

from modeldeploy.api import names
from modeldeploy.api.spec import ModelDeploymentSpec, optimization_hash
from modeldeploy.contracts import exitcodes
from modeldeploy.contracts.report import TERMINATION_MESSAGE_PATH
from modeldeploy.resources.deployment import serving_cpus
from modeldeploy.resources.common import (DEFAULT_OPERATOR_IMAGES, TOOL_UID, OperatorImages,
                                          container_security_context, literal_args, plain,
                                          pod_security_context, runtime, secret_env_from)

CONTAINER = "optimizer"
WORK_DIR = "/tmp"
DEFAULT_RESOURCES = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}


def _number(value: float) -> str:
    """Floats as the shortest text that reads back the same (0.5, 0.01), no exponent surprises for argparse."""
    return repr(float(value))


def optimizer_args(spec: ModelDeploymentSpec, version: int, allow_unsafe_formats: bool = False) -> list[str]:
    """Arguments of `modeldeploy optimize` for version N (flags whose value is unset are left out).
    `allow_unsafe_formats` is the administrator's setting (MODELDEPLOY_ALLOW_UNSAFE_MODEL_FORMATS), never a
    ModelDeployment field: formats that run Python when loaded are refused by the optimizer without it."""
    opt = spec.optimization
    if opt is None:
        raise ValueError("optimizer_args needs spec.optimization")
    args = ["--source", spec.model.uri, "--output", opt.output_uri, "--version", str(version)]
    if opt.pruning is not None:
        args += ["--prune-sparsity", _number(opt.pruning.sparsity)]
    if opt.fine_tune_epochs:
        args += ["--fine-tune-epochs", str(opt.fine_tune_epochs)]
    if opt.quantization is not None:
        args += ["--quantize", opt.quantization.mode]
    if opt.search is not None:
        args += ["--search-sparsities", ",".join(_number(v) for v in opt.search.sparsities),
                 "--search-modes", ",".join(opt.search.modes), "--search-objective", opt.search.objective,
                 "--search-budget-seconds", str(opt.search.time_budget_seconds)]
    if opt.export is not None and opt.export.onnx:
        args += ["--export-onnx"]
    if opt.dataset is not None:
        args += ["--dataset", opt.dataset.uri]
    if opt.gates.max_accuracy_drop is not None:
        args += ["--max-accuracy-drop", _number(opt.gates.max_accuracy_drop)]
    if opt.gates.min_compression is not None:
        args += ["--min-compression", _number(opt.gates.min_compression)]
    if allow_unsafe_formats:
        args += ["--allow-unsafe-model-formats"]
    # Explicit, so the path is visible in the manifest (and a kubelet stand-in can map it).
    if (cpus := serving_cpus(spec)) is not None:
        # Latency measured with the thread pools TF Serving will have in the serving pod.
        args += ["--serving-threads", str(cpus)]
    args += ["--termination-message-path", TERMINATION_MESSAGE_PATH]
    return args


def job_name(spec: ModelDeploymentSpec, version: int | None = None) -> str:
    """`<name>-opt-<N>-<hash>` for the requested (or given) version."""
    return names.job_name(spec.name, spec.model.version if version is None else version, optimization_hash(spec))


def build_job(spec: ModelDeploymentSpec, version: int | None = None,
              images: OperatorImages = DEFAULT_OPERATOR_IMAGES, allow_unsafe_formats: bool = False) -> dict:
    """The optimizer Job for version N (default: spec.model.version)."""
    opt = spec.optimization
    if opt is None:
        raise ValueError("build_job needs spec.optimization (no optimization means no Job)")
    version = spec.model.version if version is None else version
    labels = names.labels(spec.name, names.COMPONENT_OPTIMIZER, version)
    pod_spec = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(TOOL_UID),
        "containers": [{
            "name": CONTAINER,
            "image": images.optimizer,
            "command": ["modeldeploy", "optimize"],
            "args": literal_args(optimizer_args(spec, version, allow_unsafe_formats)),
            "envFrom": secret_env_from(spec.model.storage_secret),
            "env": [{"name": "HOME", "value": WORK_DIR}, {"name": "TMPDIR", "value": WORK_DIR},
                    {"name": "PYTHONUNBUFFERED", "value": "1"},
                    # The publication lock's owner: every retry (pod) of this Job is the same writer.
                    {"name": "MODELDEPLOY_WRITER_ID", "valueFrom": {"fieldRef": {
                        "fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}}],
            "resources": plain(opt.resources) if opt.resources else plain(DEFAULT_RESOURCES),
            "securityContext": container_security_context(),
            "terminationMessagePath": TERMINATION_MESSAGE_PATH,
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [{"name": "work", "mountPath": WORK_DIR}],
        }],
        "volumes": [{"name": "work", "emptyDir": {}}],
    }
    pod_spec.update(runtime(images))
    if opt.node_selector:
        pod_spec["nodeSelector"] = plain(opt.node_selector)
    if opt.tolerations:
        pod_spec["tolerations"] = plain(opt.tolerations)
    job_spec = {
        "backoffLimit": opt.backoff_limit,
        "activeDeadlineSeconds": opt.active_deadline_seconds,
        "podFailurePolicy": {"rules": [
            # A drained or preempted node is not the optimizer's fault: do not count it against backoffLimit.
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            # Exit codes another attempt cannot fix: fail the Job at once instead of spending backoffLimit.
            {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In",
                                                  "values": list(exitcodes.PERMANENT)}},
        ]},
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    if opt.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = opt.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(spec, version), "namespace": spec.namespace, "labels": labels},
        "spec": job_spec,
    }
