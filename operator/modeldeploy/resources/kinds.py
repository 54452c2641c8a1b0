"""The kinds of a ModelDeployment's children: the one table the operator derives everything about them from. Pure.

One frozen `ChildKind` per kind says where it lives in the API (group, version, plural: what discovery is asked
for, and the Kopf selector), where it comes in the apply order, whether its CRD may be absent (`optional`), how
the operator reads it (a watch-fed cache of slimmed objects, or a GET when it cannot be watched) and whether its
watch events wake the ModelDeployment's monitor entry. From `CHILDREN` come: the watches and their caches
(controller/informer.py), the API resources the requests go to (controller/apply.py, found by
discovery), the apply order of the reconciler (controller/children.py) and of `modeldeploy render` (render.py).

Every child is namespaced: a namespaced owner cannot own cluster-scoped objects, so there is no flag for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


def slim_object(obj: dict | None) -> dict | None:
    """Without the field sets of managedFields (large, never compared); who wrote the object and how (manager,
    operation, subresource) stays, in place: apply.Kube turns our create's entry into an apply's by its index."""
    fields = ((obj or {}).get("metadata") or {}).get("managedFields")
    if not fields or not any("fieldsV1" in entry for entry in fields):
        return obj                       # nothing to drop (or slimmed already): no copy
    meta = dict(obj["metadata"], managedFields=[
        {k: entry[k] for k in ("manager", "operation", "subresource") if k in entry} for entry in fields])
    return dict(obj, metadata=meta)


def slim_pod(obj: dict) -> dict:
    """What the health checks and Job reports need of a pod (pods are many: keep the cache small)."""
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    return {"metadata": {k: meta.get(k) for k in ("name", "namespace", "uid", "labels", "creationTimestamp",
                                                 "deletionTimestamp", "resourceVersion", "ownerReferences")},
            "spec": {"nodeName": spec.get("nodeName"),
                     "containers": [{"name": c.get("name"), "image": c.get("image")}
                                    for c in spec.get("containers") or ()]},
            "status": dict(obj.get("status") or {})}


@dataclass(frozen=True)
class ApiKind:
    """A kind the operator sends requests for."""
    kind: str
    group: str               # "" for the core group
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        """apiVersion of its objects, and the group/version discovery is asked about."""
        return f"{self.group}/{self.version}" if self.group else self.version


@dataclass(frozen=True)
class ChildKind(ApiKind):
    """A kind of child: how the reconciler writes it and how the operator reads it."""
    order: int | None = None          # position in the apply order; None: never written (pods are the Job's and
                                      # the Deployments')
    watched: bool = True              # watched and cached (controller/informer.py); False: read with a GET when needed
    slim: Callable[[dict], dict | None] = slim_object    # what of each object the cache keeps
    optional: bool = False            # its CRD may be absent: written only while the API serves the kind
    create_only: bool = False         # POSTed once and never updated (the optimizer Job: its spec is immutable)
    wakes: bool = False               # its watch events wake the ModelDeployment (rollouts, Jobs as they happen)


# In apply order: the NetworkPolicy before the Job's pod or a serving pod starts; the HPA after the Deployment it scales; the ServiceMonitor last (it selects the Service).
NETWORK_POLICY = ChildKind("NetworkPolicy", "networking.k8s.io", "v1", "networkpolicies", order=0)
JOB = ChildKind("Job", "batch", "v1", "jobs", order=1, create_only=True, wakes=True)
SERVICE = ChildKind("Service", "", "v1", "services", order=3)
DEPLOYMENT = ChildKind("Deployment", "apps", "v1", "deployments", order=4, wakes=True)
HPA = ChildKind("HorizontalPodAutoscaler", "autoscaling", "v2", "horizontalpodautoscalers", order=5)
PDB = ChildKind("PodDisruptionBudget", "policy", "v1", "poddisruptionbudgets", order=6)
# The Prometheus Operator's CRD is on few clusters and may come and go: not watched (a watch on an absent kind
# fails), read with a GET instead.
SERVICE_MONITOR = ChildKind("ServiceMonitor", "monitoring.coreos.com", "v1", "servicemonitors", order=7,
                            optional=True, watched=False)
POD = ChildKind("Pod", "", "v1", "pods", slim=slim_pod)

CHILDREN = (NETWORK_POLICY, JOB, SERVICE, DEPLOYMENT, HPA, PDB, SERVICE_MONITOR, POD)
BY_KIND = {k.kind: k for k in CHILDREN}
CACHED = tuple(k for k in CHILDREN if k.watched)


def apply_order(kind: str) -> int:
    """Where objects of `kind` come when children are written (sort key)."""
    return BY_KIND[kind].order
