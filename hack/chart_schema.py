#!/usr/bin/env python3
"""Write charts/modeldeploy/values.schema.json from the description below (`--check`: fail if stale).

The schema is strict where the chart owns the keys (unknown keys are typos and fail `helm install` naming the
key) and loose where a value is a raw Kubernetes object (resources, affinity, tolerations...), which the API
server validates. Kept in Python so the repeated shapes (images, probes) are written once.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "charts" / "modeldeploy" / "values.schema.json"

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DIGEST = r"^$|^sha256:[a-f0-9]{64}$"
TAG = r"^$|^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
DURATION = r"^[0-9]+(ms|s|m|h)$"


def obj(properties: dict, *, required=(), description: str = "") -> dict:
    """A closed object: unknown keys are errors."""
    s = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        s["required"] = list(required)
    if description:
        s["description"] = description
    return s


def string(description: str, **kw) -> dict:
    return {"type": "string", "description": description, **kw}


def integer(description: str, minimum: int | None = None, maximum: int | None = None) -> dict:
    s = {"type": "integer", "description": description}
    if minimum is not None:
        s["minimum"] = minimum
    if maximum is not None:
        s["maximum"] = maximum
    return s


def boolean(description: str) -> dict:
    return {"type": "boolean", "description": description}


def k8s_object(description: str) -> dict:
    """A raw Kubernetes object (validated by the API server)."""
    return {"type": "object", "description": description}


def k8s_list(description: str) -> dict:
    return {"type": "array", "description": description, "items": {"type": "object"}}


def image(what: str) -> dict:
    return obj({
        "repository": string(f"{what} image repository", minLength=1),
        "tag": string(f"{what} image tag; empty means the chart's appVersion", pattern=TAG),
        "digest": string(f"{what} image digest, sha256:<64 hex>; wins over the tag", pattern=DIGEST),
    }, required=("repository",))


def probe(what: str) -> dict:
    return obj({
        "initialDelaySeconds": integer(f"{what}: seconds before the first check", 0),
        "periodSeconds": integer(f"{what}: seconds between checks", 1),
        "timeoutSeconds": integer(f"{what}: seconds before a check times out", 1),
        "failureThreshold": integer(f"{what}: failed checks that count", 1),
    })


PORT = {"type": "integer", "minimum": 1, "maximum": 65535}


def schema() -> dict:
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "modeldeploy chart values",
        **obj({
            "replicaCount": integer("operator replicas; more than one uses Kopf peering", 1),
            "images": obj({
                "operator": image("operator"),
                "optimizer": image("optimizer"),
                "serving": image("TF Serving (CPU)"),
                "servingGpu": image("TF Serving (GPU)"),
                "pullPolicy": string("operator image pull policy", enum=["Always", "IfNotPresent", "Never"]),
                "pullSecrets": {"type": "array", "description": "image pull secrets",
                                "items": obj({"name": string("Secret name", minLength=1)}, required=("name",))},
            }),
            "watchNamespaces": {"type": "array", "description": "namespaces to watch; empty = the whole cluster",
                                "uniqueItems": True,
                                "items": string("namespace name", pattern=DNS1123_LABEL, maxLength=63)},
            "peering": obj({
                "enabled": boolean("use Kopf peering even with one replica"),
                "name": string("peering object name; empty = the release's full name",
                               pattern=r"^$|" + DNS1123_LABEL, maxLength=63),
            }),
            "logFormat": string("operator log format", enum=["json", "text"]),
            "logLevel": string("operator log level", enum=["DEBUG", "INFO", "WARNING", "ERROR"]),
            "extraArgs": {"type": "array", "description": "extra `modeldeploy run` arguments",
                          "items": {"type": "string"}},
            "extraEnv": k8s_list("extra EnvVars for the operator container"),
            "workloadRuntimeClassName": string("RuntimeClass of every optimizer Job and serving pod; empty = "
                                               "the cluster's default", pattern=r"^$|" + DNS1123_SUBDOMAIN,
                                               maxLength=253),
            "serviceAccount": obj({
                "create": boolean("create the ServiceAccount"),
                "name": string("ServiceAccount name; empty = the release's full name"),
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            }),
            "rbac": obj({
                "create": boolean("create the RBAC objects"),
                "serviceMonitors": boolean("allow managing ServiceMonitors"),
                "readSecrets": boolean("grant get on Secrets in the watched namespaces"),
            }),
            "metrics": obj({
                "enabled": boolean("serve metrics and create the metrics Service"),
                "port": {**PORT, "description": "metrics container port"},
                "service": obj({
                    "type": string("Service type", enum=["ClusterIP", "NodePort", "LoadBalancer"]),
                    "port": {**PORT, "description": "Service port"},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                }),
                "serviceMonitor": obj({
                    "enabled": boolean("create a ServiceMonitor"),
                    "interval": string("scrape interval, e.g. 30s", pattern=DURATION),
                    "scrapeTimeout": string("scrape timeout, e.g. 10s", pattern=DURATION),
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                }),
            }),
            "probes": obj({
                "port": {**PORT, "description": "health endpoint port (GET /healthz)"},
                "liveness": probe("liveness"),
                "readiness": probe("readiness"),
            }),
            "networkPolicy": obj({
                "enabled": boolean("create a NetworkPolicy"),
                "metricsFrom": k8s_list("NetworkPolicyPeers allowed to scrape metrics; empty = all"),
                "egress": k8s_list("egress rules; empty leaves egress open"),
            }),
            "podDisruptionBudget": obj({
                "enabled": boolean("create a PDB when replicaCount > 1"),
                "maxUnavailable": {"description": "replicas that may be disrupted at once (number or percent)",
                                   "oneOf": [{"type": "integer", "minimum": 0},
                                             {"type": "string", "pattern": r"^[0-9]+%$"}]},
            }),
            "resources": obj({
                "requests": k8s_object("resource requests"),
                "limits": k8s_object("resource limits"),
                "claims": k8s_list("resource claims"),
            }, description="operator container resources"),
            "podSecurityContext": k8s_object("pod security context"),
            "securityContext": k8s_object("container security context"),
            "nodeSelector": {"type": "object", "description": "node selector",
                             "additionalProperties": {"type": "string"}},
            "tolerations": k8s_list("tolerations"),
            "affinity": k8s_object("affinity; empty = preferred anti-affinity between replicas"),
            "topologySpreadConstraints": k8s_list("topology spread constraints"),
            "priorityClassName": string("PriorityClass name"),
            "podAnnotations": {"type": "object", "additionalProperties": {"type": "string"}},
            "podLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "terminationGracePeriodSeconds": integer("grace period on shutdown", 0),
        }),
    }


def render() -> str:
    return json.dumps(schema(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not SCHEMA_FILE.exists() or SCHEMA_FILE.read_text() != text:
            print(f"{SCHEMA_FILE} is out of date: run python hack/chart_schema.py", file=sys.stderr)
            return 1
        return 0
    SCHEMA_FILE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
