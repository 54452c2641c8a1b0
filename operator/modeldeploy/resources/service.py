"""The serving Service: gRPC on 8500 (port name `grpc`), REST on 8501 (port name `http`, scraped by Prometheus)."""
from __future__ import annotations

from modeldeploy.api import names
from modeldeploy.api.spec import ModelDeploymentSpec
from modeldeploy.resources.common import serving_metadata


def build_service(spec: ModelDeploymentSpec) -> dict:
    """ClusterIP Service selecting the serving pods (never the optimizer's)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": serving_metadata(spec),
        "spec": {
            "type": "ClusterIP",
            "selector": names.selector(spec.name),
            "ports": [
                {"name": "grpc", "port": names.GRPC_PORT, "targetPort": "grpc", "protocol": "TCP",
                 "appProtocol": "grpc"},
                {"name": "http", "port": names.REST_PORT, "targetPort": "http", "protocol": "TCP",
                 "appProtocol": "http"},
            ],
        },
    }
