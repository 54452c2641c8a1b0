"""Shared pieces of the pure builders: operator images, the restricted security context, small helpers.

Nothing here reads the environment or talks to a cluster: the controller resolves `OperatorImages` once (from
MODELDEPLOY_OPTIMIZER_IMAGE / MODELDEPLOY_PULL_IMAGE) and passes it in, so `modeldeploy render` and the
operator build byte-identical manifests from the same inputs.
"""
from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass
from typing import Mapping

from modeldeploy import __version__
from modeldeploy.api import names
from modeldeploy.api.spec import DNS1123_SUBDOMAIN

# Images `make images` tags; the chart overrides them through the environment.
DEFAULT_OPTIMIZER_IMAGE = f"ghcr.io/modeldeploy/optimizer:{__version__}"
DEFAULT_OPERATOR_IMAGE = f"ghcr.io/modeldeploy/operator:{__version__}"

# TF Serving's image runs as root by default; any fixed non-root uid works (it only reads /models).
SERVING_UID = 1000
# Our own images (the optimizer Job, the pull init container): the user and group the Dockerfile creates and
# sets as USER (65532, as the chart's operator pod runs too). They write to emptyDir / $TMPDIR only.
TOOL_UID = 65532

GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = "nvidia.com/gpu.present"
DEFAULT_GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
DEFAULT_GPU_NODE_SELECTOR = {GPU_NODE_LABEL: "true"}


@dataclass(frozen=True)
class OperatorImages:
    """How the pods the operator makes run, as the administrator set it: the images of our own tools (the
    optimizer Job, TensorFlow inside; the serving pods' pull init container) and the RuntimeClass of every Job
    and serving pod (a sandbox such as gVisor or Kata for tenants' models; None: the cluster's default)."""
    optimizer: str = DEFAULT_OPTIMIZER_IMAGE
    pull: str = DEFAULT_OPTIMIZER_IMAGE    # the optimizer image has `modeldeploy pull` too; the chart uses the
                                           # operator image (no TensorFlow, smaller)
    runtime_class: str | None = None


DEFAULT_OPERATOR_IMAGES = OperatorImages()


def operator_images_from_env(environ: Mapping[str, str] = os.environ) -> OperatorImages:
    """MODELDEPLOY_OPTIMIZER_IMAGE, MODELDEPLOY_PULL_IMAGE (default: the optimizer image) and
    MODELDEPLOY_RUNTIME_CLASS (a RuntimeClass name; ValueError when it cannot be one)."""
    optimizer = environ.get("MODELDEPLOY_OPTIMIZER_IMAGE") or DEFAULT_OPTIMIZER_IMAGE
    runtime_class = environ.get("MODELDEPLOY_RUNTIME_CLASS") or None
    if runtime_class is not None and not (len(runtime_class) <= 253 and re.fullmatch(DNS1123_SUBDOMAIN, runtime_class)):
        raise ValueError(f"MODELDEPLOY_RUNTIME_CLASS={runtime_class!r} is not a RuntimeClass name (a DNS-1123 "
                         "subdomain: lower-case letters, digits, '-' and '.')")
    return OperatorImages(optimizer=optimizer, pull=environ.get("MODELDEPLOY_PULL_IMAGE") or optimizer,
                          runtime_class=runtime_class)


def runtime(images: OperatorImages) -> dict:
    """The pod spec's runtimeClassName, when the administrator chose one."""
    return {"runtimeClassName": images.runtime_class} if images.runtime_class else {}


def pod_security_context(uid: int) -> dict:
    """Pod-level part of the PodSecurity `restricted` profile."""
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security_context() -> dict:
    """Container-level part of the PodSecurity `restricted` profile, plus a read-only root filesystem: the
    containers run a tenant's model, so what they write goes to emptyDirs the pod spec names."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
            "readOnlyRootFilesystem": True, "seccompProfile": {"type": "RuntimeDefault"}}


def literal_args(args: list[str]) -> list[str]:
    """Container args exactly as given: the kubelet expands $(VAR) in command and args from the container's
    environment, so a URI like s3://b/$(AWS_SECRET_ACCESS_KEY) would otherwise reach the process (its argv, the
    storage access log, error messages) with the storage Secret's value in it. `$$` is the kubelet's escape."""
    return [a.replace("$", "$$") for a in args]


def secret_env_from(secret: str | None) -> list[dict]:
    """Storage credentials as environment variables: every key of the Secret, never values in the manifest."""
    return [{"secretRef": {"name": secret}}] if secret else []


def plain(value):
    """A deep copy of user-given raw Kubernetes structures (tuples become lists), safe to embed."""
    if isinstance(value, tuple):
        value = list(value)
    return copy.deepcopy(json.loads(json.dumps(value)))


def serving_metadata(spec) -> dict:
    """Metadata shared by the serving children (Service, HPA, PDB, ServiceMonitor): one name, serving labels."""
    return {"name": names.serving_name(spec.name), "namespace": spec.namespace,
            "labels": names.labels(spec.name, names.COMPONENT_SERVING)}
