"""TF Serving's configuration files: model config, monitoring (Prometheus) config, batching parameters.

They travel on the serving pod template, one annotation per file (`annotations(spec)`), and a downwardAPI volume
(`volume()`) makes each a file under CONFIG_DIR. So every ReplicaSet carries its own configuration: a pod of the
old version that restarts mid-rollout reads the files it was made with, and a change of configuration rolls the
pods like any other template change. A ConfigMap would add an object, and a request, per ModelDeployment and
hold only the newest configuration (this operator's earlier versions wrote one: `<name>-config`, left in place
and garbage-collected with its ModelDeployment).

The model config deliberately names no version: each serving pod's emptyDir holds exactly the version its
init container pulled, and TF Serving's default policy (latest) serves it. So the files do not change when the
version does.
"""
from __future__ import annotations

from modeldeploy.api.spec import BatchingSpec, ModelDeploymentSpec

MODELS_ROOT = "/models"
CONFIG_DIR = "/etc/modeldeploy"
ANNOTATION_PREFIX = "config.modeldeploy.io/"       # + the file's name: the annotation that holds it
MODEL_CONFIG_KEY = "models.config"
MONITORING_CONFIG_KEY = "monitoring.config"
BATCHING_CONFIG_KEY = "batching.config"
# TF Serving answers 404 on this path unless a monitoring config enables it (the classic "metrics do not work").
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


def model_base_path(spec: ModelDeploymentSpec) -> str:
    """Directory TF Serving watches; version N lives in <base>/<N>."""
    return f"{MODELS_ROOT}/{spec.model.name}"


def model_config(spec: ModelDeploymentSpec) -> str:
    """ModelServerConfig text proto serving the one model of this ModelDeployment."""
    return ("model_config_list {\n"
            "  config {\n"
            f'    name: "{spec.model.name}"\n'
            f'    base_path: "{model_base_path(spec)}"\n'
            '    model_platform: "tensorflow"\n'
            "  }\n"
            "}\n")


def monitoring_config(spec: ModelDeploymentSpec) -> str:
    """MonitoringConfig text proto: Prometheus metrics on the REST port when spec.monitoring.prometheus."""
    enable = "true" if spec.monitoring.prometheus else "false"
    return ("prometheus_config {\n"
            f"  enable: {enable}\n"
            f'  path: "{PROMETHEUS_PATH}"\n'
            "}\n")


def batching_config(batching: BatchingSpec) -> str:
    """BatchingParameters text proto (--enable_batching --batching_parameters_file)."""
    return (f"max_batch_size {{ value: {batching.max_batch_size} }}\n"
            f"batch_timeout_micros {{ value: {batching.batch_timeout_micros} }}\n"
            f"max_enqueued_batches {{ value: {batching.max_enqueued_batches} }}\n"
            f"num_batch_threads {{ value: {batching.num_batch_threads} }}\n")


def config_data(spec: ModelDeploymentSpec) -> dict[str, str]:
    """The files by name: model and monitoring config always, batching only when requested."""
    data = {MODEL_CONFIG_KEY: model_config(spec), MONITORING_CONFIG_KEY: monitoring_config(spec)}
    if spec.serving.batching is not None:
        data[BATCHING_CONFIG_KEY] = batching_config(spec.serving.batching)
    return data


def annotations(spec: ModelDeploymentSpec) -> dict[str, str]:
    """The pod template's annotations holding the files."""
    return {ANNOTATION_PREFIX + name: text for name, text in config_data(spec).items()}


def volume(name: str, spec: ModelDeploymentSpec) -> dict:
    """The downwardAPI volume `name` with the files of `annotations(spec)`."""
    return {"name": name, "downwardAPI": {"items": [
        {"path": file, "fieldRef": {"fieldPath": f"metadata.annotations['{ANNOTATION_PREFIX}{file}']"}}
        for file in config_data(spec)]}}
