"""The serving Service: gRPC on 8500 (port name `grpc`), REST on 8501 (port name `http`, scraped by Prometheus).

Where the installed CRD's status cannot hold the rollback target's image, URI and runtime (an older CRD), the
Service records them in an annotation (contracts/annotations.py): an annotation on the Deployment would raise its
generation, which reads as a new rollout."""
from __future__ import annotations

from modeldeploy.api import names
from modeldeploy.api.spec import ModelDeploymentSpec
from modeldeploy.contracts import annotations
from modeldeploy.resources.common import serving_metadata


def build_service(spec: ModelDeploymentSpec, last_good=None) -> dict:
    """ClusterIP Service selecting the serving pods (never the optimizer's); `last_good` (a ServingTarget): the
    rollback target to record."""
    meta = serving_metadata(spec)
    if last_good is not None:
        meta["annotations"] = {annotations.LAST_GOOD: annotations.target_value(
            last_good.version, last_good.image, last_good.uri, last_good.runtime)}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
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
