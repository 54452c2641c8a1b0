"""A fake Kubernetes API under the real kubernetes client: `FakeApi().client` is a kubernetes.client.ApiClient
whose urllib3 pool manager is replaced, so everything above the socket (ApiClient, RESTClientObject, the dynamic
client and its discovery, apply.Kube) runs as in the operator. Every request is recorded (`calls`).

Discovery is answered from DISCOVERY: what a Kubernetes 1.31 API server lists for the group/versions the
operator uses, written out by hand (not derived from the operator's registry), with neighbours (subresources,
other kinds and versions) that a wrong lookup would pick. Other requests: `respond[(method, path)]` when set
(status, body); else PATCH/POST echo their body, DELETE answers a Status, GET answers 404. A watch request streams
the next events of `streams`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from kubernetes import client as k8s

N, C = True, False          # namespaced, cluster-scoped
DISCOVERY = {
    "v1": [("pods", "Pod", N), ("pods/status", "Pod", N), ("pods/log", "Pod", N), ("configmaps", "ConfigMap", N),
           ("secrets", "Secret", N), ("services", "Service", N), ("services/status", "Service", N),
           ("events", "Event", N), ("namespaces", "Namespace", C), ("nodes", "Node", C)],
    "apps/v1": [("deployments", "Deployment", N), ("deployments/scale", "Scale", N),
                ("deployments/status", "Deployment", N), ("replicasets", "ReplicaSet", N),
                ("statefulsets", "StatefulSet", N)],
    "batch/v1": [("jobs", "Job", N), ("jobs/status", "Job", N), ("cronjobs", "CronJob", N)],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy", N), ("ingresses", "Ingress", N),
                             ("ingressclasses", "IngressClass", C)],
    "autoscaling/v1": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", N)],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", N),
                       ("horizontalpodautoscalers/status", "HorizontalPodAutoscaler", N)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", N),
                  ("poddisruptionbudgets/status", "PodDisruptionBudget", N)],
    "events.k8s.io/v1": [("events", "Event", N)],
    "apiextensions.k8s.io/v1": [("customresourcedefinitions", "CustomResourceDefinition", C),
                                ("customresourcedefinitions/status", "CustomResourceDefinition", C)],
    "modeldeploy.io/v1alpha1": [("modeldeployments", "ModelDeployment", N),
                                ("modeldeployments/status", "ModelDeployment", N),
                                ("modeldeployments/scale", "Scale", N)],
}
MONITORING = {"monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor", N), ("podmonitors", "PodMonitor", N)]}


@dataclass
class Call:
    method: str
    path: str
    query: dict
    headers: dict
    body: object
    timeout: object


@dataclass
class _Response:
    status: int
    data: bytes
    reason: str = ""
    headers: dict = field(default_factory=lambda: {"Content-Type": "application/json"})

    def getheaders(self):
        return self.headers

    def getheader(self, name, default=None):
        return self.headers.get(name, default)

    # An unread answer (a watch: _preload_content=False) is streamed.
    def stream(self, amt=None, decode_content=False):
        yield self.data

    def close(self):
        pass

    def release_conn(self):
        pass


class FakeApi:
    """The pool manager's stand-in (urllib3's PoolManager.request signature) and the ApiClient over it."""

    def __init__(self, monitoring: bool = False):
        self.served = {**DISCOVERY, **(MONITORING if monitoring else {})}
        self.calls: list[Call] = []
        self.respond: dict[tuple[str, str], tuple[int, object]] = {}
        self.streams: list[list[dict]] = []     # the events of each next watch request, in order
        self.on_idle = lambda: None             # called by a watch request once `streams` is used up
        self.client = k8s.ApiClient(k8s.Configuration(host="https://api.test"))
        self.client.rest_client.pool_manager = self

    def request(self, method, url, body=None, fields=None, headers=None, timeout=None, **_):
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query)) | dict(fields or ())
        self.calls.append(Call(method, parts.path, query, dict(headers or {}), json.loads(body) if body else None,
                               timeout))
        if str(query.get("watch")) == "True":
            if not self.streams:
                self.on_idle()
            events = self.streams.pop(0) if self.streams else []
            return _Response(200, b"".join(json.dumps(e).encode() + b"\n" for e in events))
        status, answer = self._answer(method, parts.path, self.calls[-1].body)
        return _Response(status, json.dumps(answer).encode(), reason="OK" if status < 300 else "Error")

    def _answer(self, method, path, body):
        if (method, path) in self.respond:
            return self.respond[(method, path)]
        if method == "GET" and path == "/version":
            return 200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0"}
        if method == "GET" and path == "/apis":
            return 200, {"kind": "APIGroupList", "groups": [
                {"name": gv.split("/")[0], "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
                 "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]}}
                for gv in self.served if "/" in gv]}
        gv = path.removeprefix("/api/") if path.startswith("/api/") else path.removeprefix("/apis/")
        if method == "GET" and gv in self.served:
            return 200, {"kind": "APIResourceList", "groupVersion": gv, "resources": [
                {"name": n, "singularName": "", "namespaced": ns, "kind": k, "verbs": ["get", "list", "patch"]}
                for n, k, ns in self.served[gv]]}
        if method in ("PATCH", "POST"):
            return (200 if method == "PATCH" else 201), body
        if method == "DELETE":
            return 200, {"kind": "Status", "status": "Success"}
        return 404, {"kind": "Status", "message": f"{path} not found", "reason": "NotFound", "code": 404}

    def discovery(self) -> list[str]:
        """Paths of the discovery requests so far."""
        return [c.path for c in self.calls if c.path in ("/version", "/apis") or c.path.removeprefix("/api/")
                .removeprefix("/apis/") in self.served]

    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.method != "GET"]
