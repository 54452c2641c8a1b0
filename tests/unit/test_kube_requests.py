"""apply.Kube's requests as they leave the kubernetes client (the dynamic client over a fake HTTP layer,
tests/unit/fake_kube_api.py): method, path, query, content type, body, timeout; errors; counting; discovery."""
from __future__ import annotations

import hashlib
import json
import tempfile

import kubernetes
import pytest
import urllib3

from modeldeploy.api import names
from modeldeploy.controller import apply
from tests.unit.fake_kube_api import FakeApi

OWNER = {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "name": "digits", "uid": "u1",
         "controller": True, "blockOwnerDeletion": True}
DEPLOY = "/apis/apps/v1/namespaces/ml/deployments"
MD = "/apis/modeldeploy.io/v1alpha1/namespaces/ml/modeldeployments"
DISCOVERY_OF_APPS = ["/version", "/apis", "/apis/apps/v1"]


def _deployment(name="digits", **spec):
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "ml", "labels": {names.LABEL_INSTANCE: "digits"}},
            "spec": {"replicas": 2, **spec}}


def _kube(**kw):
    api = FakeApi(**kw)
    return api, apply.Kube(api.client)


def test_nothing_is_sent_before_the_first_request_then_discovery_once_and_every_request_counted():
    api, kube = _kube()
    assert api.calls == [] and kube.requests == 0
    assert kube.get("Deployment", "ml", "digits") is None                    # 404: None
    assert [c.path for c in api.calls] == DISCOVERY_OF_APPS + [f"{DEPLOY}/digits"]
    kube.get("Deployment", "ml", "other")
    kube.get("Job", "ml", "digits")                                         # another group: its discovery only
    kube.get("Secret", "ml", "digits")                                      # the core group: not every group's v1
    assert api.discovery() == DISCOVERY_OF_APPS + ["/apis/batch/v1", "/api/v1"]
    assert kube.requests == len(api.calls) == 9
    timeout = api.calls[-1].timeout                                          # REQUEST_TIMEOUT, discovery too
    assert all((c.timeout.connect_timeout, c.timeout.read_timeout) == apply.REQUEST_TIMEOUT for c in api.calls)
    assert (timeout.connect_timeout, timeout.read_timeout) == (5, 30)


def test_apply_is_a_forced_server_side_apply_by_our_field_manager_and_answers_a_plain_dict():
    api, kube = _kube()
    action, obj = kube.ensure(_deployment(), OWNER, None)
    [call] = api.writes()
    assert (call.method, call.path) == ("PATCH", f"{DEPLOY}/digits")
    assert call.headers["Content-Type"] == "application/apply-patch+yaml"
    assert call.query == {"fieldManager": names.FIELD_MANAGER, "force": "true"}
    assert call.body["metadata"]["ownerReferences"] == [OWNER] and call.body["spec"] == {"replicas": 2}
    assert action == "created" and type(obj) is dict and obj["metadata"]["name"] == "digits"
    assert kube.writes == 1
    api.respond[("GET", DEPLOY)] = (200, {"kind": "DeploymentList", "apiVersion": "apps/v1", "items": []})
    assert kube.children("Deployment", "ml", "digits") == [obj]               # no cache: a LIST, then our write
    assert api.calls[-1].query == {"labelSelector": f"{names.LABEL_INSTANCE}=digits,"
                                                    f"{names.LABEL_MANAGED_BY}={names.APP_NAME}"}


def test_the_first_apply_to_an_object_we_created_makes_our_entry_an_apply_entry_first():
    """A POST records operation Update, and server-side apply would never remove a field that entry owns."""
    api, kube = _kube()
    live = _deployment(replicas=1)
    live["metadata"].update(ownerReferences=[OWNER], managedFields=[
        {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status"},
        {"manager": names.FIELD_MANAGER, "operation": "Update"}])
    assert kube.ensure(_deployment(), OWNER, live)[0] == "updated"
    fix, apply_ = api.writes()
    assert (fix.method, fix.path, fix.headers["Content-Type"]) == ("PATCH", f"{DEPLOY}/digits",
                                                                   "application/json-patch+json")
    assert fix.body == [
        {"op": "test", "path": "/metadata/managedFields/1/manager", "value": names.FIELD_MANAGER},
        {"op": "test", "path": "/metadata/managedFields/1/operation", "value": "Update"},
        {"op": "replace", "path": "/metadata/managedFields/1/operation", "value": "Apply"}]
    assert apply_.headers["Content-Type"] == "application/apply-patch+yaml"
    live["metadata"]["managedFields"][1]["operation"] = "Apply"           # converted: applies go straight out
    api.calls.clear()
    kube.ensure(_deployment(), OWNER, live)
    assert [c.headers["Content-Type"] for c in api.writes()] == ["application/apply-patch+yaml"]
    live["metadata"]["managedFields"][1]["operation"] = "Update"
    api.respond[("PATCH", f"{DEPLOY}/digits")] = (422, {"kind": "Status", "code": 422, "message": "test failed"})
    with pytest.raises(apply.ApiError) as err:                            # the cache was behind: retried later
        kube.ensure(_deployment(), OWNER, live)
    assert err.value.status == 409


def test_a_status_patch_is_a_merge_patch_of_the_status_subresource():
    api, kube = _kube()
    body = {"metadata": {"name": "digits", "namespace": "ml"}}
    assert kube.patch_status(body, {"phase": "Pending"}, {"phase": "Pending"}) is None and api.calls == []
    assert kube.patch_status(body, {"phase": "Pending"}, {"phase": "Ready"}) == {"status": {"phase": "Ready"}}
    [call] = api.writes()
    assert (call.method, call.path) == ("PATCH", f"{MD}/digits/status")
    assert call.headers["Content-Type"] == "application/merge-patch+json"
    assert call.body == {"status": {"phase": "Ready"}}


@pytest.mark.parametrize("orphan, policy", [(False, "Background"), (True, "Orphan")])
def test_delete_sends_delete_options_with_a_uid_precondition(orphan, policy):
    api, kube = _kube()
    live = {"metadata": {"name": "digits", "namespace": "ml", "uid": "x"}}
    api.respond[("DELETE", f"{DEPLOY}/digits")] = (404, {"kind": "Status", "code": 404})   # gone already: fine
    kube.delete("Deployment", live, orphan=orphan)
    [call] = api.writes()
    assert (call.method, call.path, call.headers["Content-Type"]) == ("DELETE", f"{DEPLOY}/digits", "application/json")
    assert call.body == {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": policy,
                         "preconditions": {"uid": "x"}}
    assert kube.writes == 1


def test_a_create_conflict_returns_the_existing_object_or_a_name_conflict():
    api, kube = _kube()
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "opt", "namespace": "ml"}, "spec": {}}
    mine = {**job, "metadata": {**job["metadata"], "ownerReferences": [OWNER]}}
    api.respond[("POST", "/apis/batch/v1/namespaces/ml/jobs")] = (409, {"kind": "Status", "reason": "AlreadyExists"})
    api.respond[("GET", "/apis/batch/v1/namespaces/ml/jobs/opt")] = (200, mine)
    assert kube.create(job, OWNER) == ("exists", mine)
    post = next(c for c in api.calls if c.method == "POST")
    assert post.query == {"fieldManager": names.FIELD_MANAGER} and post.body["metadata"]["ownerReferences"] == [OWNER]
    api.respond[("GET", "/apis/batch/v1/namespaces/ml/jobs/opt")] = (200, job)       # not ours
    with pytest.raises(apply.NameConflict):
        kube.create(job, OWNER)
    assert kube.requests == len(api.calls)


def test_api_errors_carry_the_status_and_say_which_request():
    api, kube = _kube()
    api.respond[("GET", f"{DEPLOY}/digits")] = (500, {"kind": "Status", "message": "etcd is sulking"})
    with pytest.raises(apply.ApiError) as err:
        kube.get("Deployment", "ml", "digits")
    assert err.value.status == 500
    assert str(err.value) == f"GET {DEPLOY}/digits: 500 Error: etcd is sulking"
    api.respond[("PATCH", f"{DEPLOY}/digits")] = (422, {"kind": "Status", "message": "field is immutable"})
    with pytest.raises(apply.ApiError) as err:
        kube.ensure(_deployment(), OWNER, None)
    assert err.value.status == 422 and kube.writes == 0


def test_a_kind_the_api_does_not_serve_is_an_error_not_a_missing_object():
    api, kube = _kube()
    with pytest.raises(apply.ApiError) as err:
        kube.get("ServiceMonitor", "ml", "digits")
    assert err.value.status is None
    with pytest.raises(apply.ApiError) as err:
        kube.ensure({**_deployment(), "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor"}, OWNER, None)
    assert err.value.status is None and api.writes() == []


def test_crd_exists_asks_one_group_version_again_after_the_ttl():
    api, kube = _kube()
    assert not kube.crd_exists("monitoring.coreos.com/v1", "servicemonitors")
    assert kube.requests == 3                               # the client's /version and /apis, then the group/version
    assert not kube.crd_exists("monitoring.coreos.com/v1", "servicemonitors") and kube.requests == 3    # cached
    api.served["monitoring.coreos.com/v1"] = [("servicemonitors", "ServiceMonitor", True)]          # installed
    assert kube.crd_exists("monitoring.coreos.com/v1", "servicemonitors", ttl=0) and kube.requests == 4
    kube.ensure({**_deployment(), "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor"}, OWNER, None)
    assert api.calls[-1].path == "/apis/monitoring.coreos.com/v1/namespaces/ml/servicemonitors/digits"
    assert kube.requests == 5                               # written without another discovery
    del api.served["monitoring.coreos.com/v1"]                                                      # removed
    assert not kube.crd_exists("monitoring.coreos.com/v1", "servicemonitors", ttl=0)
    assert kube.crd_exists("modeldeploy.io/v1alpha1", "modeldeployments") and kube.requests == 7


def test_the_status_schema_is_read_from_the_installed_crd():
    api, kube = _kube()
    status = {"type": "object", "properties": {"phase": {"type": "string"}}}
    crd = {"spec": {"versions": [{"name": "v1alpha1", "schema": {"openAPIV3Schema": {"properties": {
        "status": status}}}}]}}
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/modeldeployments.modeldeploy.io"
    api.respond[("GET", path)] = (200, crd)
    assert kube.status_schema() == status
    api.respond[("GET", path)] = (403, {"kind": "Status", "message": "forbidden"})
    assert kube.status_schema() is None


def test_discovery_stays_in_memory(tmp_path, monkeypatch):
    """No cache file is read or written: the default one, in the temp dir and named after the server URL, could
    describe another cluster (and the root filesystem is read-only in the pod)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale = tmp_path / f"osrcp-{hashlib.md5(b'https://api.test').hexdigest()}.json"      # the client's default
    stale.write_text(json.dumps({"library_version": kubernetes.__version__, "version": {"kubernetes": {}}}))
    api, kube = _kube()
    kube.get("Deployment", "ml", "digits")
    assert api.discovery() == DISCOVERY_OF_APPS                              # /version asked: the file was not read
    assert list(tmp_path.iterdir()) == [stale] and json.loads(stale.read_text())["version"] == {"kubernetes": {}}


def test_a_connection_failure_is_not_swallowed():
    api, kube = _kube()

    def down(*_, **__):
        raise urllib3.exceptions.MaxRetryError(None, "https://api.test/version", OSError("refused"))
    api.request = down
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        kube.get("Deployment", "ml", "digits")
    assert kube.requests == 1                              # counted, and the client is made again next time
    assert kube._dynamic is None


def test_the_status_patch_answer_and_the_overlay_keep_no_field_sets_and_nothing_expired(monkeypatch):
    """What the operator keeps per object is what decides its memory at 2,000 objects (bench/operator_scale.py)."""
    api, kube = _kube()
    entry = {"manager": "x", "operation": "Update", "subresource": "status"}
    answer = {"metadata": {"name": "digits", "managedFields": [dict(entry, fieldsV1={"f:status": {}})]},
              "status": {"phase": "Ready"}}
    api.respond[("PATCH", f"{MD}/digits/status")] = (200, answer)
    body = {"metadata": {"name": "digits", "namespace": "ml"}}
    assert kube.patch_status(body, {}, {"phase": "Ready"}) == {"metadata": {"name": "digits", "managedFields": [entry]},
                                                               "status": {"phase": "Ready"}}
    clock = [1000.0]
    monkeypatch.setattr(apply.time, "monotonic", lambda: clock[0])
    kube._remember("Deployment", {"name": "a", "namespace": "ml", "labels": {names.LABEL_INSTANCE: "a"}}, {})
    clock[0] += apply.OVERLAY_SECONDS + 1
    kube._remember("Deployment", {"name": "b", "namespace": "ml", "labels": {names.LABEL_INSTANCE: "b"}}, {})
    assert list(kube._overlay) == [("Deployment", "ml", "b")]      # "a" was never read again, and is gone


def test_a_kind_discovery_does_not_find_is_an_error_for_get_never_a_free_name():
    """A group/version answering 503 looks to the client's discovery like one serving nothing: the name check
    must fail, not pass (the apply after it could discover again and take someone else's object over)."""
    api, kube = _kube()
    api.respond[("GET", "/apis/apps/v1")] = (503, {"kind": "Status", "code": 503})
    with pytest.raises(apply.ApiError) as err:
        kube.get("Deployment", "ml", "digits")
    assert err.value.status is None and "Deployment" in str(err.value)
    assert not [c for c in api.calls if c.path.startswith(DEPLOY)]
