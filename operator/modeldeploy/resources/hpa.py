"""The autoscaling/v2 HorizontalPodAutoscaler (only when spec.autoscaling is set)."""
from __future__ import annotations

from modeldeploy.api import names
from modeldeploy.api.spec import ModelDeploymentSpec
from modeldeploy.resources.common import plain, serving_metadata


def metrics(spec: ModelDeploymentSpec) -> list[dict]:
    """The user's metric list when given, else average CPU utilization at targetCPUUtilization."""
    auto = spec.autoscaling
    if auto.metrics:
        return plain(auto.metrics)
    return [{"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": auto.target_cpu_utilization}}}]


def build_hpa(spec: ModelDeploymentSpec) -> dict | None:
    """The HPA scaling the serving Deployment, or None without spec.autoscaling."""
    if spec.autoscaling is None:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": serving_metadata(spec),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                               "name": names.serving_name(spec.name)},
            "minReplicas": spec.autoscaling.min_replicas,
            "maxReplicas": spec.autoscaling.max_replicas,
            "metrics": metrics(spec),
        },
    }
