"""The registry of child kinds (resources/kinds.py) and what is derived from it: Kopf indexes and watch selectors,
API paths, the apply order of the reconciler and of `render`, and the optional ServiceMonitor."""
from __future__ import annotations

from modeldeploy.controller import apply
from modeldeploy.resources import kinds, render
from tests.unit.test_resources import IMAGES, OPTIMIZED, md

APPLY_ORDER = ["NetworkPolicy", "Job", "ConfigMap", "Service", "Deployment", "HorizontalPodAutoscaler",
               "PodDisruptionBudget", "ServiceMonitor"]


def test_every_kind_has_a_path_and_is_cached_or_optional():
    for kind in kinds.CHILDREN:
        assert apply.Kube.path(kind.kind, "ml", "x").endswith(f"/namespaces/ml/{kind.plural}/x")
        assert apply.Kube.path(kind.kind, "ml").startswith("/api/v1/" if not kind.group else
                                                          f"/apis/{kind.group}/{kind.version}/")
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
    assert indexed == {("ml", "digits"): kinds.slim_pod(pod)}


def test_render_follows_the_apply_order():
    objs = render.build_all(md(optimization=OPTIMIZED, autoscaling={"maxReplicas": 4}), images=IMAGES)
    assert [o["kind"] for o in objs] == [k for k in APPLY_ORDER if k != "ServiceMonitor"]
