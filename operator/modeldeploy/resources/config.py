"""ConfigMap with TF Serving's configuration: model config, monitoring (Prometheus) config, batching parameters.

The model config deliberately names no version: each serving pod's emptyDir holds exactly the version its
init container pulled, and TF Serving's default policy (latest) serves it. So the ConfigMap does not change
when the version does, and an old pod that restarts mid-rollout still finds its own version.
"""
from __future__ import annotations

from modeldeploy.api import names
from modeldeploy.api.spec import BatchingSpec, ModelDeploymentSpec
from modeldeploy.contracts import annotations
from modeldeploy.resources.common import content_hash

MODELS_ROOT = "/models"
CONFIG_DIR = "/etc/modeldeploy"
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
    """The ConfigMap's data: model and monitoring config always, batching only when requested."""
    data = {MODEL_CONFIG_KEY: model_config(spec), MONITORING_CONFIG_KEY: monitoring_config(spec)}
    if spec.serving.batching is not None:
        data[BATCHING_CONFIG_KEY] = batching_config(spec.serving.batching)
    return data


def config_hash(spec: ModelDeploymentSpec) -> str:
    """Hash of the ConfigMap data, put on the pod template so a config change rolls the pods."""
    return content_hash(config_data(spec))


def build_config_map(spec: ModelDeploymentSpec, last_good=None) -> dict:
    """The TF Serving ConfigMap `<name>-config`; `last_good` (a ServingTarget), the rollback target, is recorded
    in its annotation (contracts/annotations.py) when given."""
    meta = {"name": names.config_map_name(spec.name), "namespace": spec.namespace,
            "labels": names.labels(spec.name, names.COMPONENT_SERVING)}
    if last_good is not None:
        meta["annotations"] = {annotations.LAST_GOOD: annotations.target_value(
            last_good.version, last_good.image, last_good.uri, last_good.runtime)}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": config_data(spec)}
