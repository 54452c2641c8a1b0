"""The serving Deployment: TF Serving with an init container that pulls the published version into an emptyDir.

What the pod template serves is a `ServingTarget` (version, image, source URI, runtime): normally the one the
spec asks for (`target_from_spec`), during a rollback the last good one the controller passes in. The template
records it in an annotation (contracts/annotations.py) the controller reads back, and carries TF Serving's
configuration files (resources/config.py). Everything else (resources, GPUs, scheduling, batching) comes from the
spec.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from modeldeploy.api import names, quantity
from modeldeploy.api.spec import ModelDeploymentSpec, source_uri
from modeldeploy.contracts import annotations as contract
from modeldeploy.resources import config
from modeldeploy.resources.common import (DEFAULT_GPU_NODE_SELECTOR, DEFAULT_GPU_TOLERATION,
                                          DEFAULT_OPERATOR_IMAGES, GPU_RESOURCE, SERVING_UID, TOOL_UID,
                                          OperatorImages, container_security_context, literal_args,
                                          plain, pod_security_context, runtime, secret_env_from)

CONTAINER = "tf-serving"
INIT_CONTAINER = "pull-model"
MODELS_VOLUME = "models"
CONFIG_VOLUME = "config"
TMP_VOLUME = "tmp"
DEFAULT_RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}}   # CPU requests: the HPA's CPU target needs them
PULL_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
# Large models take minutes to load: allow up to 30 min before liveness starts to count.
STARTUP_PERIOD_SECONDS = 10
STARTUP_FAILURE_THRESHOLD = 180
# TF Serving retries a failed load 5 times, 60 s apart, before it gives up and exits: about 5 minutes per
# container start, close to the rollout deadline. The model sits in the pod's emptyDir, so a load that failed
# once fails again; one retry 5 s later still absorbs a transient error (memory pressure at start).
MAX_LOAD_RETRIES = 1
LOAD_RETRY_INTERVAL_MICROS = 5_000_000
# TF Serving sizes its REST threads as 4 x the CPUs it sees (the node's, not the container's limit).
REST_THREADS_PER_CPU = 4


@dataclass(frozen=True)
class ServingTarget:
    """What the serving pods run: model version N pulled from `uri`, on TF Serving `image`, as `runtime`
    (tensorflow: the SavedModel; tflite: model.tflite with --prefer_tflite_model)."""
    version: int
    image: str
    uri: str
    runtime: str = "tensorflow"


def target_from_spec(spec: ModelDeploymentSpec) -> ServingTarget:
    """The target the spec asks for. Runtime auto is decided from the Job's measurements (controller/tuning.py);
    without them (`modeldeploy render`) it is what auto falls back to, tensorflow."""
    runtime = "tensorflow" if spec.serving.runtime == "auto" else spec.serving.runtime
    return ServingTarget(version=spec.model.version, image=spec.serving.image,
                         uri=source_uri(spec, spec.model.version), runtime=runtime)


def scrape_annotations(spec: ModelDeploymentSpec) -> dict[str, str]:
    """Prometheus scrape annotations for the serving pods ({} when monitoring.prometheus is off)."""
    if not spec.monitoring.prometheus:
        return {}
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(names.REST_PORT),
            "prometheus.io/path": config.PROMETHEUS_PATH}


def serving_cpus(spec: ModelDeploymentSpec) -> int | None:
    """Whole CPUs the TF Serving container may use: its CPU limit, else its request, rounded up (None: neither)."""
    resources = spec.serving.resources or DEFAULT_RESOURCES
    for kind in ("limits", "requests"):
        cpu = (resources.get(kind) or {}).get("cpu")
        if cpu is not None:
            return max(1, math.ceil(quantity.value(cpu)))
    return None


def serving_args(spec: ModelDeploymentSpec, runtime: str = "tensorflow") -> list[str]:
    """TF Serving's command-line flags."""
    args = [f"--port={names.GRPC_PORT}", f"--rest_api_port={names.REST_PORT}",
            f"--model_name={spec.model.name}", f"--model_base_path={config.model_base_path(spec)}",
            f"--model_config_file={config.CONFIG_DIR}/{config.MODEL_CONFIG_KEY}",
            f"--monitoring_config_file={config.CONFIG_DIR}/{config.MONITORING_CONFIG_KEY}",
            f"--max_num_load_retries={MAX_LOAD_RETRIES}",
            f"--load_retry_interval_micros={LOAD_RETRY_INTERVAL_MICROS}",
            # The version directory never changes in a pod (the init container filled it): poll once.
            "--file_system_poll_wait_seconds=0",
            # Without it TF Serving disables XLA, and a model saved with jit_compile=True loads but fails every
            # request; models without XLA clusters are unaffected.
            "--xla_cpu_compilation_enabled=true"]
    cpus = serving_cpus(spec)
    if cpus is not None:
        # TF Serving sizes its thread pools from the node's CPUs, not the container's: on a 64-core node a
        # 1-CPU pod would run 256 REST threads and 64-wide op pools that the CPU quota throttles.
        args += [f"--tensorflow_intra_op_parallelism={cpus}", f"--tensorflow_inter_op_parallelism={cpus}",
                 f"--rest_api_num_threads={REST_THREADS_PER_CPU * cpus}"]
    if runtime == "tflite":
        # model.tflite instead of the SavedModel; one interpreter pool per CPU, as TF Serving sizes its op pools.
        args += ["--prefer_tflite_model=true", f"--num_tflite_pools={cpus or 1}",
                 "--num_tflite_interpreters_per_pool=1"]
    if spec.serving.batching is not None:
        args += ["--enable_batching=true",
                 f"--batching_parameters_file={config.CONFIG_DIR}/{config.BATCHING_CONFIG_KEY}"]
    return args


def serving_resources(spec: ModelDeploymentSpec) -> dict:
    """The user's resources (or defaults) with `nvidia.com/gpu: N` in limits when GPUs are asked for."""
    resources = plain(spec.serving.resources) if spec.serving.resources else plain(DEFAULT_RESOURCES)
    if spec.serving.gpus > 0:
        resources.setdefault("limits", {})[GPU_RESOURCE] = str(spec.serving.gpus)
    return resources


def scheduling(spec: ModelDeploymentSpec) -> dict:
    """nodeSelector, tolerations, affinity: the user's, else GPU defaults when GPUs are asked for."""
    out = {}
    gpu = spec.serving.gpus > 0
    if spec.serving.node_selector:
        out["nodeSelector"] = plain(spec.serving.node_selector)
    elif gpu:
        out["nodeSelector"] = dict(DEFAULT_GPU_NODE_SELECTOR)
    if spec.serving.tolerations:
        out["tolerations"] = plain(spec.serving.tolerations)
    elif gpu:
        out["tolerations"] = [dict(DEFAULT_GPU_TOLERATION)]
    if spec.serving.affinity:
        out["affinity"] = plain(spec.serving.affinity)
    return out


def _probe(path: str | None, period: int, failures: int, delay: int = 0) -> dict:
    action = {"httpGet": {"path": path, "port": "http"}} if path else {"tcpSocket": {"port": "grpc"}}
    probe = dict(action, periodSeconds=period, timeoutSeconds=5, failureThreshold=failures)
    if delay:
        probe["initialDelaySeconds"] = delay
    return probe


def pull_flags(spec: ModelDeploymentSpec, target: ServingTarget) -> list[str]:
    """`modeldeploy pull` flags of a serving pod: a model served as it is was never published (no _COMPLETE
    marker), so its SavedModel directory is copied as it is; else the files of its runtime only, and on GPU pods
    the SavedModel that computes in float16 when the version has one (the pull falls back to the other)."""
    if spec.optimization is None:
        return ["--as-is"]
    gpu = spec.serving.gpus > 0 and target.runtime == "tensorflow"
    return ["--runtime", target.runtime] + (["--accelerator", "gpu"] if gpu else [])


def build_pod_template(spec: ModelDeploymentSpec, target: ServingTarget,
                       images: OperatorImages = DEFAULT_OPERATOR_IMAGES) -> dict:
    """The serving pod template for `target`."""
    model_dir = f"{config.model_base_path(spec)}/{target.version}"
    status_path = f"/v1/models/{spec.model.name}"
    annotations = dict(scrape_annotations(spec))
    annotations.update(config.annotations(spec))
    annotations[contract.SERVING_TARGET] = contract.target_value(target.version, target.image, target.uri,
                                                                 target.runtime)
    init = {
        "name": INIT_CONTAINER,
        "image": images.pull,
        "command": ["modeldeploy", "pull"],
        "args": literal_args([target.uri, model_dir] + pull_flags(spec, target)),
        "envFrom": secret_env_from(spec.model.storage_secret),
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": plain(PULL_RESOURCES),
        # The image's user and group; the pod's fsGroup (SERVING_UID) still owns the models volume, so the
        # serving container reads what this one writes.
        "securityContext": dict(container_security_context(), runAsUser=TOOL_UID, runAsGroup=TOOL_UID),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": MODELS_VOLUME, "mountPath": config.MODELS_ROOT},
                         {"name": TMP_VOLUME, "mountPath": "/tmp"}],
    }
    serving = {
        "name": CONTAINER,
        "image": target.image,
        "args": literal_args(serving_args(spec, target.runtime)),
        "ports": [{"name": "grpc", "containerPort": names.GRPC_PORT, "protocol": "TCP"},
                  {"name": "http", "containerPort": names.REST_PORT, "protocol": "TCP"}],
        "resources": serving_resources(spec),
        "readinessProbe": _probe(status_path, period=5, failures=3),
        "livenessProbe": _probe(None, period=10, failures=3),
        "startupProbe": _probe(status_path, period=STARTUP_PERIOD_SECONDS, failures=STARTUP_FAILURE_THRESHOLD),
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": MODELS_VOLUME, "mountPath": config.MODELS_ROOT, "readOnly": True},
                         {"name": CONFIG_VOLUME, "mountPath": config.CONFIG_DIR, "readOnly": True},
                         {"name": TMP_VOLUME, "mountPath": "/tmp"}],
    }
    pod_spec = {
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(SERVING_UID),
        "initContainers": [init],
        "containers": [serving],
        "volumes": [{"name": MODELS_VOLUME, "emptyDir": {}},
                    config.volume(CONFIG_VOLUME, spec),
                    # The root filesystems are read-only; /tmp is the one scratch place.
                    {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "1Gi"}}],
    }
    pod_spec.update(scheduling(spec))
    pod_spec.update(runtime(images))
    return {"metadata": {"labels": names.labels(spec.name, names.COMPONENT_SERVING, target.version),
                         "annotations": annotations},
            "spec": pod_spec}


def serving_selector(spec: ModelDeploymentSpec) -> dict:
    """The serving Deployment's selector. Under strategy canary it leaves out the canary's pods (track=canary,
    resources/canary.py) so the two Deployments' selectors never overlap; under rolling it is the selector every
    serving Deployment had before canaries existed (a Deployment's selector is immutable)."""
    selector = {"matchLabels": names.selector(spec.name)}
    if spec.rollout.strategy == "canary":
        selector["matchExpressions"] = [{"key": names.LABEL_TRACK, "operator": "NotIn",
                                         "values": [names.TRACK_CANARY]}]
    return selector


def build_deployment(spec: ModelDeploymentSpec, target: ServingTarget | None = None,
                     images: OperatorImages = DEFAULT_OPERATOR_IMAGES, replicas: int | None = None) -> dict:
    """The serving Deployment. `replicas` is left out while autoscaling is on: the HPA owns it. `replicas`
    overrides spec.serving.replicas while a canary takes its share (resources/canary.py)."""
    target = target or target_from_spec(spec)
    dep_spec = {
        "selector": serving_selector(spec),
        "progressDeadlineSeconds": spec.rollout.progress_deadline_seconds,
        # Never take a serving pod down before its replacement is ready: the old version keeps serving while a
        # new one starts (and keeps serving if it never does).
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": build_pod_template(spec, target, images),
    }
    if spec.autoscaling is None:
        dep_spec = {"replicas": spec.serving.replicas if replicas is None else replicas, **dep_spec}
    meta = {"name": names.serving_name(spec.name), "namespace": spec.namespace,
            "labels": names.labels(spec.name, names.COMPONENT_SERVING)}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": dep_spec}
