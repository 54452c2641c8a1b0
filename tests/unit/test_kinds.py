"""The registry of child kinds (resources/kinds.py) and what is derived from it: the watched kinds and their caches,
the API resources discovery resolves them to, the apply order of the reconciler and of `render`, and the optional
ServiceMonitor."""
from __future__ import annotations

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
APPLY_ORDER = ["NetworkPolicy", "Job", "Service", "Deployment", "HorizontalPodAutoscaler",
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
        assert kind.watched or kind.optional
    assert [k.kind for k in kinds.CHILDREN if not k.watched] == ["ServiceMonitor"]
    assert len({k.kind for k in kinds.CHILDREN}) == len(kinds.CHILDREN) == len(kinds.BY_KIND)


def test_apply_order_is_stable_and_total_over_what_is_written():
    written = sorted((k for k in kinds.CHILDREN if k.order is not None), key=lambda k: k.order)
    assert [k.kind for k in written] == APPLY_ORDER
    assert len({k.order for k in written}) == len(written)
    assert [k.kind for k in kinds.CHILDREN if k.order is None] == ["Pod"]      # read only: the Job's and ours


def test_api_versions_and_flags():
    assert kinds.POD.api_version == "v1" and kinds.DEPLOYMENT.api_version == "apps/v1"
    assert kinds.SERVICE_MONITOR.api_version == "monitoring.coreos.com/v1"
    assert [k.kind for k in kinds.CHILDREN if k.optional] == ["ServiceMonitor"]
    assert [k.kind for k in kinds.CHILDREN if k.create_only] == ["Job"]


def test_slimming():
    fields = [{"manager": "modeldeploy", "operation": "Update", "fieldsV1": {"f:spec": {"f:x": {}}}},
              {"manager": "kcm", "operation": "Update", "subresource": "status", "fieldsV1": {"f:status": {}}}]
    obj = {"metadata": {"name": "a", "managedFields": fields}, "spec": {"x": 1}}
    slim = kinds.slim_object(obj)
    assert slim == {"metadata": {"name": "a", "managedFields": [
        {"manager": "modeldeploy", "operation": "Update"},                  # who wrote it how, in place
        {"manager": "kcm", "operation": "Update", "subresource": "status"}]}, "spec": {"x": 1}}
    assert kinds.slim_object(slim) is slim                                  # slim already: no copy
    assert obj["metadata"]["managedFields"] is fields                        # a copy: the watched body is Kopf's
    pod = {"metadata": {"name": "p", "labels": {"a": "b"}, "managedFields": []},
           "spec": {"nodeName": "n1", "volumes": [{"name": "v"}],
                    "containers": [{"name": "c", "image": "i", "args": []}]},
           "status": {"phase": "Running"}}
    slim = kinds.POD.slim(pod)
    assert slim["spec"] == {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}
    assert slim["metadata"]["labels"] == {"a": "b"} and "managedFields" not in slim["metadata"]
    assert slim["status"] == {"phase": "Running"}


def test_render_follows_the_apply_order():
    objs = render.build_all(md(optimization=OPTIMIZED, autoscaling={"maxReplicas": 4}), images=IMAGES)
    assert [o["kind"] for o in objs] == [k for k in APPLY_ORDER if k != "ServiceMonitor"]


# --- the reconciler's writes ---------------------------------------------------------------------------------------

class _Kube:
    """Records the writer's requests; `crd`: whether the ServiceMonitor CRD is served; `live`: what a GET finds;
    `taken`: names whose POST finds someone else's object."""

    def __init__(self, crd=True, live=None, taken=()):
        self.calls, self.crd, self.live, self.taken = [], crd, live, taken

    def crd_exists(self, group_version, plural):
        self.calls.append(("discover", plural))
        return self.crd

    def get(self, kind, namespace, name):
        self.calls.append(("get", kind, name))
        return self.live

    def ensure(self, desired, owner, live):
        self.calls.append(("apply", desired["kind"], desired["metadata"]["name"]))
        return ("created" if live is None else "unchanged"), desired

    def create(self, desired, owner):
        kind, name = desired["kind"], desired["metadata"]["name"]
        self.calls.append(("create", kind, name))
        if name in self.taken or (kind, name) in self.taken:
            raise apply.NameConflict(kind, "ml", name, {"metadata": {}})
        return "created", dict(desired, metadata=dict(desired["metadata"], uid=f"uid-{kind}"))

    def delete(self, kind, live):
        self.calls.append(("delete", kind, live["metadata"]["name"]))


def _ctx(kube, egress=None, status_schema=None):
    return SimpleNamespace(kube=kube, egress_cidrs=egress, tool_images=IMAGES, allow_unsafe_formats=False,
                           unwatched={}, status_schema=status_schema)


def _plan(**kw):
    return SimpleNamespace(**{"target": None, "serving": None, "last_good": None, "canary": None,
                              "create_job": False, **kw})


def _ours(name, **fields):
    return {"metadata": {"name": name, "ownerReferences": [{"uid": "u1", "controller": True}]}, **fields}


def _write(ctx, spec, plan, live=(), check_first=False, first_pass=False):
    kids = {k.kind: [] for k in kinds.CACHED}
    for kind, name in live:
        kids[kind].append(_ours(name))
    result = Result()
    children.write(ctx, spec, plan, OWNER, kids, result, check_first=check_first, first_pass=first_pass)
    return result


def _writes(kube):
    return [(c[0], c[1], c[2]) for c in kube.calls if c[0] in ("apply", "create", "delete")]


def test_new_children_are_created_in_apply_order_with_no_read_before():
    kube = _Kube(crd=False)
    canary = SimpleNamespace(running=True, target=NEW, split=Split(canary=1, stable=3))
    spec = md(optimization=OPTIMIZED, serving={"replicas": 4})
    result = _write(_ctx(kube, egress=("10.0.0.0/8",)), spec, _plan(target=TARGET, canary=canary, create_job=True))
    assert not [c for c in kube.calls if c[0] == "get"]                       # each POST answers a taken name
    assert _writes(kube) == [("create", kind, name) for kind, name in [
        ("NetworkPolicy", "digits"), ("Job", job_name(spec)),
        ("Service", "digits"), ("Deployment", "digits"),
        ("Deployment", "digits-canary"), ("PodDisruptionBudget", "digits")]]
    assert result.actions[1] == "Job created"


def test_a_taken_name_stops_the_pass_at_its_create():
    kube = _Kube(crd=False, taken={("Deployment", "digits")})
    with pytest.raises(apply.NameConflict):
        _write(_ctx(kube), md(autoscaling={"maxReplicas": 4}), _plan(target=TARGET))
    # What came before stays (ours; the operator may not delete Services); nothing after (the HPA) is written.
    assert _writes(kube) == [("create", "Service", "digits"), ("create", "Deployment", "digits")]


@pytest.mark.parametrize("check_first", [True, False])
def test_names_are_read_before_the_first_write_when_existing_children_change_or_a_conflict_stalled(check_first):
    """A pass that also updates a child must not leave it half-changed on a conflict, and a stalled conflict's
    retries must not create and delete again: then every new name is read first."""
    kube = _Kube(crd=False, live=_ours("digits"))
    spec = md(autoscaling={"maxReplicas": 4})
    live = [("NetworkPolicy", "digits"), ("Service", "digits")] + ([("Deployment", "digits")] * check_first)
    kids = {k.kind: [] for k in kinds.CACHED}
    for kind, name in live:
        kids[kind].append(_ours(name, **({"spec": {"replicas": 1}} if kind == "Deployment" else {})))
    kube.live = None
    children.write(_ctx(kube), spec, _plan(target=TARGET), OWNER, kids, Result(), check_first=check_first)
    reads = [c for c in kube.calls if c[0] == "get"]
    writes = _writes(kube)
    assert kube.calls.index(reads[-1]) < kube.calls.index(writes[0])
    assert ("get", "HorizontalPodAutoscaler", "digits") in reads
    assert ("create", "HorizontalPodAutoscaler", "digits") in writes


def test_a_name_taken_in_the_cache_by_an_object_we_do_not_control_stops_before_any_write():
    kube = _Kube(crd=False)
    kids = {k.kind: [] for k in kinds.CACHED}
    kids["Service"].append({"metadata": {"name": "digits", "ownerReferences": [{"uid": "x", "controller": True}]}})
    with pytest.raises(apply.NameConflict):
        children.write(_ctx(kube), md(), _plan(target=TARGET), OWNER, kids, Result())
    assert _writes(kube) == []


def test_the_rollback_target_goes_on_the_service_only_where_status_cannot_hold_it():
    from modeldeploy.api.crd import status_schema
    plan = _plan(target=TARGET, last_good=TARGET)
    annotated = {}
    for schema in (status_schema(), None):
        kube = _Kube(crd=False)
        _write(_ctx(kube, status_schema=schema), md(), plan)
        service = next(c for c in children.wanted(_ctx(kube, status_schema=schema), md(), plan)
                       if c.kind.kind == "Service")
        annotated[schema is None] = "annotations" in service.desired["metadata"]
    assert annotated == {False: False, True: True}


def test_without_a_target_serving_is_left_alone_but_a_stopped_canary_goes():
    kube = _Kube()
    _write(_ctx(kube), md(), _plan(), live=[("Deployment", "digits"), ("Deployment", "digits-canary")])
    assert kube.calls == [("delete", "Deployment", "digits-canary")]         # no discovery: no ServiceMonitor either


def test_the_optional_service_monitor_is_skipped_when_its_crd_is_absent():
    kube = _Kube(crd=False)
    _write(_ctx(kube), md(), _plan(target=TARGET))
    assert ("discover", "servicemonitors") in kube.calls
    assert not [c for c in kube.calls if "ServiceMonitor" in c]


def test_the_service_monitor_is_created_then_read_with_a_get_only_when_changed_or_stale():
    kube = _Kube()
    ctx = _ctx(kube)
    assert "ServiceMonitor created" in _write(ctx, md(), _plan(target=TARGET), first_pass=True).actions
    assert [c for c in kube.calls if "ServiceMonitor" in c] == [("create", "ServiceMonitor", "digits")]
    kube.calls.clear()
    _write(_ctx(kube), md(), _plan(target=TARGET))                 # after a restart: read, not created blindly
    assert [c for c in kube.calls if "ServiceMonitor" in c] == [("get", "ServiceMonitor", "digits"),
                                                                ("create", "ServiceMonitor", "digits")]
    kube.calls.clear()
    _write(ctx, md(), _plan(target=TARGET))
    assert not [c for c in kube.calls if "ServiceMonitor" in c]             # written as wanted, recently: no GET
    kube.live = _ours("digits")
    _write(ctx, md(monitoring={"intervalSeconds": 60}), _plan(target=TARGET))
    assert [c for c in kube.calls if "ServiceMonitor" in c] == [
        ("get", "ServiceMonitor", "digits"), ("apply", "ServiceMonitor", "digits")]     # what we want changed
    kube.calls.clear()
    ctx.unwatched = {key: (digest, at - children.RECHECK_SECONDS - 1) for key, (digest, at) in ctx.unwatched.items()}
    _write(ctx, md(monitoring={"intervalSeconds": 60}), _plan(target=TARGET))
    assert [c for c in kube.calls if "ServiceMonitor" in c] == [
        ("get", "ServiceMonitor", "digits"), ("apply", "ServiceMonitor", "digits")]     # stale: read, repaired
    kube.live = {"metadata": {"name": "digits", "ownerReferences": [{"uid": "x", "controller": True}]}}
    ctx.unwatched.clear()
    ctx.unwatched[("ServiceMonitor", "ml", "digits", "u1")] = ("old", 0.0)
    with pytest.raises(apply.NameConflict):                                  # someone else's now: left alone
        _write(ctx, md(), _plan(target=TARGET), live=[("Service", "digits"), ("Deployment", "digits")])


@pytest.mark.parametrize("owned, deleted", [(True, True), (False, False)])
def test_a_service_monitor_no_longer_wanted_is_deleted_only_when_ours(owned, deleted):
    refs = [{"uid": "u1" if owned else "other", "controller": True}]
    kube = _Kube(live={"metadata": {"name": "digits", "ownerReferences": refs}})
    _write(_ctx(kube), md(monitoring={"prometheus": False}), _plan(target=TARGET))
    assert (("delete", "ServiceMonitor", "digits") in kube.calls) is deleted


def test_no_diff_base_is_kept_and_kopf_detects_causes_without_one():
    """handlers.NoDiffBase spares Kopf a deep copy of every watched body: safe while no handler needs a
    diff-base (no on.create/update/resume or daemons), and Kopf's cause detection takes a missing one."""
    import asyncio
    import logging

    import kopf
    from kopf._cogs.structs import bodies, references
    from kopf._core.engines import indexing
    from kopf._core.intents import registries
    from kopf._core.reactor import inventory, processing

    from modeldeploy.controller import handlers
    registry = registries.get_default_registry()
    assert not registry._changing.get_all_handlers() and not registry._spawning.get_all_handlers()
    settings = kopf.OperatorSettings()
    settings.persistence.diffbase_storage = handlers.NoDiffBase()
    obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "digits", "namespace": "ml",
           "labels": {"app.kubernetes.io/instance": "digits"}}, "spec": {"replicas": 1}, "status": {}}
    resource = references.Resource(group="apps", version="v1", plural="deployments", kind="Deployment",
                                   namespaced=True, verbs=["list", "watch"])
    logger = logging.getLogger("test")

    async def detect():              # Kopf's per-object memory reads the event loop's clock
        return processing._detect_causes(
            indexers=indexing.OperatorIndexers(), registry=registry, settings=settings, resource=resource,
            raw_event={"type": "MODIFIED", "object": obj}, body=bodies.Body(obj), patch=kopf.Patch(),
            memory=inventory.ResourceMemory(), local_logger=logger, event_logger=logger)
    causes = asyncio.run(detect())
    assert causes.changing_cause is None and causes.spawning_cause is None
