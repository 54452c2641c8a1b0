"""controller/informer.py: the children's read cache, as its requests leave the kubernetes client (the fake API
of tests/unit/fake_kube_api.py streams the watch events): paginated LIST, WATCH from its version, events applied,
waking, a 410 answered by a new LIST; and the Kopf registry left with the ModelDeployment handler alone."""
from __future__ import annotations

import json
import threading

from modeldeploy.api import names
from modeldeploy.controller import apply, informer
from modeldeploy.resources import kinds
from tests.unit.fake_kube_api import FakeApi

DEPLOY = "/apis/apps/v1/deployments"
OURS = "app.kubernetes.io/managed-by=modeldeploy"


def _dep(name, md="digits", rv="1", namespace="ml", **labels):
    return {"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv,
                         "labels": {names.LABEL_INSTANCE: md, **labels},
                         "managedFields": [{"manager": "modeldeploy", "operation": "Apply", "fieldsV1": {"f:x": {}}}]},
            "spec": {"replicas": 1}}


def _list(items, rv, token=None):
    items = [{k: v for k, v in item.items() if k not in ("kind", "apiVersion")} for item in items]   # as a LIST has them
    return 200, {"kind": "DeploymentList", "apiVersion": "apps/v1", "items": items,
                 "metadata": {"resourceVersion": rv, **({"continue": token} if token else {})}}


def _informer(wake=None):
    api = FakeApi()
    api.kube = apply.Kube(api.client)
    return api, informer.Informer(kinds.DEPLOYMENT, wake)


def test_a_relist_reads_every_page_and_keeps_slim_compact_text_by_modeldeployment():
    api, inf = _informer()
    pages = iter([_list([_dep("a"), _dep("b", md="other")], "7", token="next"), _list([_dep("c")], "7")])
    api._answer = lambda method, path, body, original=api._answer: next(pages) if path == DEPLOY \
        else original(method, path, body)
    assert inf.relist(api.kube) == "7" and inf.synced.is_set()
    lists = [c for c in api.calls if c.path == DEPLOY]
    assert [c.query for c in lists] == [{"labelSelector": OURS, "limit": 500},
                                        {"labelSelector": OURS, "limit": 500, "continue": "next"}]
    texts = inf.store._items[("ml", "digits")]
    assert set(texts) == {"a", "c"} and all(" " not in t and "fieldsV1" not in t for t in texts.values())
    first, second = inf.store.get(("ml", "digits")), inf.store.get(("ml", "digits"))
    assert first[0] == kinds.slim_object(_dep("a"))                          # kind and apiVersion put back
    assert first[0] is not second[0]                           # fresh dicts: a reconcile may change what it reads
    assert inf.store.get(("ml", "nothing")) == []


def test_watch_events_are_applied_in_order_and_wake_their_modeldeployment():
    woken = []
    api, inf = _informer(lambda ns, md: woken.append((ns, md)))
    inf.store.replace([_dep("a"), _dep("gone")])
    api.streams = [[{"type": "ADDED", "object": _dep("b", rv="8")},
                    {"type": "MODIFIED", "object": dict(_dep("a", rv="9"), spec={"replicas": 3})},
                    {"type": "DELETED", "object": _dep("gone", rv="10")},
                    {"type": "MODIFIED", "object": _dep("b", md="moved", rv="11")},     # relabelled: it moves
                    {"type": "BOOKMARK", "object": {"kind": "Deployment", "metadata": {"resourceVersion": "12"}}}]]
    assert inf.follow(api.kube, "7") == "12"
    [call] = [c for c in api.calls if c.path == DEPLOY]
    assert call.query == {"labelSelector": OURS, "resourceVersion": "7", "timeoutSeconds": 300,
                          "watch": True, "allowWatchBookmarks": True}
    assert call.timeout.read_timeout == informer.WATCH_SECONDS + apply.REQUEST_TIMEOUT[1]   # longer than the watch
    assert [d["spec"]["replicas"] for d in inf.store.get(("ml", "digits"))] == [3]
    assert [d["metadata"]["name"] for d in inf.store.get(("ml", "moved"))] == ["b"]
    assert woken == [("ml", "digits")] * 3 + [("ml", "moved")]                    # not for the bookmark


def test_a_relist_replaces_the_store_and_wakes_only_what_changed():
    woken = []
    api, inf = _informer(lambda ns, md: woken.append(md))
    inf.store.replace([_dep("a"), _dep("x", md="same"), _dep("y", md="deleted-meanwhile")])
    api.respond[("GET", DEPLOY)] = _list([dict(_dep("a", rv="5"), spec={"replicas": 2}), _dep("x", md="same")], "9")
    inf.relist(api.kube)
    assert sorted(woken) == ["deleted-meanwhile", "digits"]
    assert inf.store.get(("ml", "deleted-meanwhile")) == []


def test_a_410_lists_again_and_watches_from_the_new_version():
    api, inf = _informer()
    versions = iter(["5", "9"])
    api._answer = lambda method, path, body, original=api._answer: _list([_dep("a")], next(versions)) \
        if path == DEPLOY else original(method, path, body)
    api.streams = [[{"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                                 "message": "too old resource version: 5 (8)"}}]]
    api.on_idle = inf.stopped.set
    thread = threading.Thread(target=inf.run, args=(api.kube,))
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    watches = [c.query.get("resourceVersion") for c in api.calls if c.path == DEPLOY and "watch" in c.query]
    lists = [c for c in api.calls if c.path == DEPLOY and "watch" not in c.query]
    assert len(lists) == 2 and watches == ["5", "9"]


def test_only_watched_kinds_get_an_informer_and_only_waking_kinds_wake():
    informers = informer.Informers(wake=lambda ns, md: None)
    assert set(informers.by_scope) == {(k.kind, None) for k in kinds.CACHED}
    assert {k for (k, _), i in informers.by_scope.items() if i.wake is not None} == {"Deployment", "Job"}
    assert informers.cache("ServiceMonitor", "ml", "x") is None                     # not cached: read by a GET
    pod = {"metadata": {"name": "p", "namespace": "ml", "labels": {names.LABEL_INSTANCE: "digits"}},
           "spec": {"containers": [{"name": "c", "image": "i", "env": [{"name": "A"}]}]}, "status": {}}
    informers.by_scope[("Pod", None)].store.put(pod)
    assert informers.cache("Pod", "ml", "digits") == [json.loads(json.dumps(kinds.slim_pod(pod)))]


def test_informers_watch_the_namespaces_kopf_watches():
    """One informer per kind and named namespace (what its Roles allow); a glob or negation, which any namespace
    may match, and no namespace at all mean every namespace."""
    assert informer.scopes(["ml", "team-2"]) == ["ml", "team-2"]
    assert informer.count(["ml", "team-2"]) == 2 * len(kinds.CACHED)
    for namespaces in ([], ["ml", "ml-*"], ["!kube-system"], ["a,b"]):
        assert informer.scopes(namespaces) == [None]
    api, inf = _informer()
    inf.namespace = "ml"
    api.respond[("GET", "/apis/apps/v1/namespaces/ml/deployments")] = _list([], "1")
    inf.relist(api.kube)
    api.streams = [[]]
    inf.follow(api.kube, "1")
    assert [c.path for c in api.calls if "deployments" in c.path] == ["/apis/apps/v1/namespaces/ml/deployments"] * 2
    scoped = informer.Informers(print, ["ml"])
    scoped.by_scope[("Pod", "ml")].store.put({"metadata": {"name": "p", "namespace": "ml",
                                                           "labels": {names.LABEL_INSTANCE: "d"}}})
    assert len(scoped.cache("Pod", "ml", "d")) == 1 and scoped.cache("Pod", "other", "d") is None


def test_kopf_watches_modeldeployments_only():
    """The children are watched by the informers alone: a Kopf index or handler on them would watch them twice."""
    from kopf._core.intents import registries

    from modeldeploy.controller import handlers
    registry = registries.get_default_registry()
    assert not registry._indexing.get_all_handlers()
    assert [(h.id, h.fn, h.selector.any_name) for h in registry._watching.get_all_handlers()] == [
        ("md_event", handlers.md_event, "modeldeployments")]
