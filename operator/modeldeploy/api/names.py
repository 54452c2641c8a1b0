"""Pure naming: child object names, labels and selectors for a ModelDeployment.

Interface (stable):

- `serving_name(md_name)`: Deployment, Service, HPA and PDB are all named like the ModelDeployment.
- `job_name(md_name, version, opt_hash)`: `<name>-opt-<N>-<hash>`, at most 63 characters (DNS-1123 label);
  the name part is cut when needed, the `-opt-<N>-<hash>` suffix never, so the name stays unique per version
  and optimization spec.
- `labels(md_name, component, version=None)`: the recommended app.kubernetes.io labels plus
  `modeldeploy.io/version`.
- `selector(md_name)`: the immutable serving pod selector (a dict); `selector_string(md_name)` is the same as
  `status.selector` for the scale subresource. Optimizer pods carry component=optimizer, so they never match.
- `canary_name(md_name)`: `<name>-canary`, the canary Deployment of spec.rollout.strategy canary; its pods carry
  `modeldeploy.io/track: canary` (`LABEL_TRACK`), which the stable Deployment's selector excludes.
- `rest_url(...)`, `grpc_address(...)`: in-cluster endpoints recorded in status.
"""
from __future__ import annotations

MAX_NAME = 63
FIELD_MANAGER = "modeldeploy"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_VERSION = "modeldeploy.io/version"
# Canary pods carry track=canary; stable pods carry no track label, so a Deployment switching to strategy canary
# keeps its pod template (and its pods) and only its selector gains "track NotIn (canary)".
LABEL_TRACK = "modeldeploy.io/track"
TRACK_CANARY = "canary"
TRACK_STABLE = "stable"
APP_NAME = "modeldeploy"

COMPONENT_SERVING = "serving"
COMPONENT_OPTIMIZER = "optimizer"

GRPC_PORT = 8500
REST_PORT = 8501


def serving_name(md_name: str) -> str:
    """Name of the serving Deployment, Service, HPA and PodDisruptionBudget."""
    return md_name


def canary_name(md_name: str) -> str:
    """Name of the canary Deployment (a Deployment name may be 253 characters; its pods' hostnames are cut)."""
    return f"{md_name}-canary"


def job_name(md_name: str, version: int, opt_hash: str) -> str:
    """Deterministic optimization Job name `<name>-opt-<N>-<hash>`, cut to 63 characters at the name part."""
    suffix = f"-opt-{version}-{opt_hash}"
    room = MAX_NAME - len(suffix)
    if room < 1:
        raise ValueError(f"version {version} and hash {opt_hash!r} leave no room for a name in 63 characters")
    # A cut can end on '-'; strip it so names read `ab-opt-3-...`, not `ab--opt-3-...`.
    head = md_name[:room].rstrip("-") or md_name[:1]
    return head + suffix


def labels(md_name: str, component: str, version: int | None = None) -> dict[str, str]:
    """Labels on every child: app.kubernetes.io/{name,instance,component,managed-by}, modeldeploy.io/version."""
    out = {
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: md_name,
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: APP_NAME,
    }
    if version is not None:
        out[LABEL_VERSION] = str(version)
    return out


def child_selector(md_name: str | None = None) -> str:
    """Label selector of our children: all of them, or (md_name) one ModelDeployment's."""
    ours = f"{LABEL_MANAGED_BY}={APP_NAME}"
    return ours if md_name is None else f"{LABEL_INSTANCE}={md_name},{ours}"


def selector(md_name: str) -> dict[str, str]:
    """Serving pod selector (matchLabels). Never includes the version: a Deployment's selector is immutable."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: md_name, LABEL_COMPONENT: COMPONENT_SERVING}


def selector_string(md_name: str) -> str:
    """`selector(md_name)` as a label selector string, the value of status.selector."""
    return ",".join(f"{k}={v}" for k, v in selector(md_name).items())


def rest_url(md_name: str, namespace: str, model_name: str) -> str:
    """In-cluster REST endpoint of the served model."""
    return f"http://{serving_name(md_name)}.{namespace}.svc:{REST_PORT}/v1/models/{model_name}"


def grpc_address(md_name: str, namespace: str) -> str:
    """In-cluster gRPC address (host:port) of the serving Service."""
    return f"{serving_name(md_name)}.{namespace}.svc:{GRPC_PORT}"
