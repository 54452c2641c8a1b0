"""The registry of child kinds (resources/kinds.py) and what is derived from it: Kopf indexes and watch selectors,
the API resources discovery resolves them to, the apply order of the reconciler and of `render`, and the optional
ServiceMonitor."""
from __future__ import annotations

import json

from types import SimpleNamespace

import pytest

from modeldeploy.controller import apply, children
from modeldeploy.controller.context import Result
from modeldeploy.resources import kinds, render
from modeldeploy.resources.canary import Split
from modeldeploy.resources.deployment import ServingTarget
from modeldeploy.resources.job import job_name
from tests.unit.fake_kube_api import FakeApi
from tests.unit.test_resources import IMAGES, OPTIMIZED, md

TARGET = ServingTarget(3, "tensorflow/serving:2.21.0", "s3://models/digits/base", "tensorflow")
NEW = ServingTarget(4, "tensorflow/serving:2.21.0", "s3://models/digits/base", "tensorflow")
OWNER = {"uid": "u1"}
APPLY_ORDER = ["NetworkPolicy", "Job", "ConfigMap", "Service", "Deployment", "HorizontalPodAutoscaler",
               "PodDisruptionBudget", "ServiceMonitor"]


def test_every_kind_resolves_to_its_api_resource_and_is_cached_or_optional():
    """Discovery (a fake API server listing what a real one serves) finds each kind the operator sends requests
    for at the group/version and plural of the registry (the plural is also Kopf's selector)."""
    kube = apply.Kube(FakeApi(monitoring=True).client)
    for kind in apply.API_KINDS.values():
        resource = kube._resource(kind.kind)
        assert (resource.group_version, resource.name, resource.kind) == (kind.api_version, kind.plural, kind.kind)
        assert resource.namespaced == (kind.kind != "CustomResourceDefinition")
        prefix = f"/apis/{kind.group}/{kind.version}" if kind.group else "/api/v1"
        where = "/namespaces/ml" if resource.namespaced else ""
        assert resource.path(name="x", namespace="ml") == f"{prefix}{where}/{kind.plural}/x"
    assert set(kinds.BY_KIND) <= set(apply.API_KINDS)
    for kind in kinds.CHILDREN:
        # Not watched means read with a GET: only for a kind whose CRD may be absent (a watch on it would fail).
        assert kind.index is not None or kind.optional
    assert len({k.index for k in kinds.CACHED}) == len(kinds.CACHED)
    assert len({k.kind for k in kinds.CHILDREN}) == len(kinds.CHILDREN) == len(kinds.BY_KIND)


def test_apply_order_is_stable_and_total_over_what_is_written():
    written = sorted((k for k in kinds.CHILDREN if k.order is not None), key=lambda k: k.order)
    assert [k.kind for k in written] == APPLY_ORDER
    assert len({k.order for k in written}) == len(written)
    assert [k.kind for k in kinds.CHILDREN if k.order is None] == ["Pod"]      # read only: the Job's and ours


def test_selectors_and_api_versions():
    assert kinds.POD.selector == ("v1", "pods") and kinds.POD.api_version == "v1"
    assert kinds.DEPLOYMENT.selector == ("apps", "v1", "deployments") and kinds.DEPLOYMENT.api_version == "apps/v1"
    assert kinds.SERVICE_MONITOR.api_version == "monitoring.coreos.com/v1"
    assert [k.kind for k in kinds.CHILDREN if k.optional] == ["ServiceMonitor"]
    assert [k.kind for k in kinds.CHILDREN if k.create_only] == ["Job"]


def test_slimming():
    obj = {"metadata": {"name": "a", "managedFields": [{"manager": "x"}]}, "spec": {"x": 1}}
    assert kinds.slim_object(obj) == {"metadata": {"name": "a"}, "spec": {"x": 1}}
    assert "managedFields" in obj["metadata"]                                # a copy: the watched body is Kopf's
    pod = {"metadata": {"name": "p", "labels": {"a": "b"}, "managedFields": []},
           "spec": {"nodeName": "n1", "volumes": [{"name": "v"}],
                    "containers": [{"name": "c", "image": "i", "args": []}]},
           "status": {"phase": "Running"}}
    slim = kinds.POD.slim(pod)
    assert slim["spec"] == {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}
    assert slim["metadata"]["labels"] == {"a": "b"} and "managedFields" not in slim["metadata"]
    assert slim["status"] == {"phase": "Running"}


def test_kopf_indexes_event_handlers_and_watch_selectors_come_from_the_registry():
    import asyncio

    from kopf._core.intents import registries

    from modeldeploy.controller import handlers
    registry = registries.get_default_registry()
    indexes = {h.id: h for h in registry._indexing.get_all_handlers()}
    assert set(indexes) == {k.index for k in kinds.CACHED}
    for kind in kinds.CACHED:
        handler = indexes[kind.index]
        assert (handler.selector.group, handler.selector.version) == (kind.group, kind.version)
        assert handler.param is kind and handler.labels == handlers.LABELS
    events = {h.id for h in registry._watching.get_all_handlers()}
    assert {"deployment-event", "job-event"} <= events
    pod = {"metadata": {"name": "p", "labels": {"app.kubernetes.io/instance": "digits"}}, "spec": {}, "status": {}}
    indexed = asyncio.run(handlers.index_child(namespace="ml", labels=pod["metadata"]["labels"], body=pod,
                                               param=kinds.POD))
    assert {key: json.loads(text) for key, text in indexed.items()} == {("ml", "digits"): kinds.slim_pod(pod)}


def test_render_follows_the_apply_order():
    objs = render.build_all(md(optimization=OPTIMIZED, autoscaling={"maxReplicas": 4}), images=IMAGES)
    assert [o["kind"] for o in objs] == [k for k in APPLY_ORDER if k != "ServiceMonitor"]


# --- the reconciler's writes ---------------------------------------------------------------------------------------

class _Kube:
    """Records the writer's requests; `crd`: whether the ServiceMonitor CRD is served."""

    def __init__(self, crd=True, live=None):
        self.calls, self.crd, self.live = [], crd, live

    def crd_exists(self, group_version, plural):
        self.calls.append(("discover", plural))
        return self.crd

    def get(self, kind, namespace, name):
        self.calls.append(("get", kind, name))
        return self.live

    def check_owner(self, desired, owner, live):
        self.calls.append(("check", desired["kind"], desired["metadata"]["name"]))

    def ensure(self, desired, owner, live):
        self.calls.append(("apply", desired["kind"], desired["metadata"]["name"]))
        return ("created" if live is None else "unchanged"), desired

    def create(self, desired, owner):
        self.calls.append(("create", desired["kind"], desired["metadata"]["name"]))
        return "created", desired

    def delete(self, kind, live):
        self.calls.append(("delete", kind, live["metadata"]["name"]))


def _ctx(kube, egress=None):
    return SimpleNamespace(kube=kube, egress_cidrs=egress, tool_images=IMAGES, allow_unsafe_formats=False,
                           unwatched={})


def _plan(**kw):
    return SimpleNamespace(**{"target": None, "serving": None, "last_good": None, "canary": None,
                              "create_job": False, **kw})


def _write(ctx, spec, plan, live=()):
    kids = {k.kind: [] for k in kinds.CACHED}
    for kind, name in live:
        kids[kind].append({"metadata": {"name": name, "ownerReferences": [{"uid": "u1", "controller": True}]}})
    result = Result()
    children.write(ctx, spec, plan, OWNER, kids, result)
    return result


def test_children_are_checked_first_then_written_in_apply_order():
    kube = _Kube(crd=False)
    canary = SimpleNamespace(running=True, target=NEW, split=Split(canary=1, stable=3))
    spec = md(optimization=OPTIMIZED, serving={"replicas": 4})
    result = _write(_ctx(kube, egress=("10.0.0.0/8",)), spec, _plan(target=TARGET, canary=canary, create_job=True))
    writes = [c for c in kube.calls if c[0] in ("apply", "create", "delete")]
    checks = [c for c in kube.calls if c[0] == "check"]
    assert kube.calls.index(checks[-1]) < kube.calls.index(writes[0])       # a conflict changes nothing
    assert [(c[1], c[2]) for c in writes] == [
        ("NetworkPolicy", "digits"), ("Job", job_name(spec)),
        ("ConfigMap", "digits-config"), ("Service", "digits"), ("Deployment", "digits"),
        ("Deployment", "digits-canary"), ("PodDisruptionBudget", "digits")]
    assert ("check", "Job", job_name(spec)) not in checks                     # its create answers a taken name
    assert result.actions[1] == "Job created"


def test_without_a_target_serving_is_left_alone_but_a_stopped_canary_goes():
    kube = _Kube()
    _write(_ctx(kube), md(), _plan(), live=[("Deployment", "digits"), ("Deployment", "digits-canary")])
    assert kube.calls == [("delete", "Deployment", "digits-canary")]         # no discovery: no ServiceMonitor either


def test_the_optional_service_monitor_is_skipped_when_its_crd_is_absent():
    kube = _Kube(crd=False)
    _write(_ctx(kube), md(), _plan(target=TARGET))
    assert ("discover", "servicemonitors") in kube.calls
    assert not [c for c in kube.calls if "ServiceMonitor" in c]


def test_the_service_monitor_is_read_with_a_get_and_rechecked_only_when_changed_or_stale():
    kube = _Kube()
    ctx = _ctx(kube)
    assert "ServiceMonitor created" in _write(ctx, md(), _plan(target=TARGET)).actions
    assert ("get", "ServiceMonitor", "digits") in kube.calls
    kube.calls.clear()
    _write(ctx, md(), _plan(target=TARGET))
    assert not [c for c in kube.calls if "ServiceMonitor" in c]             # written as wanted, recently: no GET
    _write(ctx, md(monitoring={"intervalSeconds": 60}), _plan(target=TARGET))
    assert ("apply", "ServiceMonitor", "digits") in kube.calls               # what we want changed
    kube.calls.clear()
    ctx.unwatched = {key: (digest, at - children.RECHECK_SECONDS - 1) for key, (digest, at) in ctx.unwatched.items()}
    kube.live = {"metadata": {"name": "digits", "ownerReferences": [{"uid": "u1", "controller": True}]}}
    _write(ctx, md(monitoring={"intervalSeconds": 60}), _plan(target=TARGET))
    assert [c for c in kube.calls if "ServiceMonitor" in c] == [
        ("get", "ServiceMonitor", "digits"), ("check", "ServiceMonitor", "digits"),
        ("apply", "ServiceMonitor", "digits")]                                # stale: read again, edits repaired


@pytest.mark.parametrize("owned, deleted", [(True, True), (False, False)])
def test_a_service_monitor_no_longer_wanted_is_deleted_only_when_ours(owned, deleted):
    refs = [{"uid": "u1" if owned else "other", "controller": True}]
    kube = _Kube(live={"metadata": {"name": "digits", "ownerReferences": refs}})
    _write(_ctx(kube), md(monitoring={"prometheus": False}), _plan(target=TARGET))
    assert (("delete", "ServiceMonitor", "digits") in kube.calls) is deleted
