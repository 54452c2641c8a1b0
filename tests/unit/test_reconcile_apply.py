"""The pure parts of writing (controller/diff.py): the owned-fields comparison that decides "no write", merge
patches, schema pruning; health findings from pod dicts; and what Kube sends to replace a Deployment."""
from __future__ import annotations

import copy

import pytest

from modeldeploy.controller import apply, diff, health
from modeldeploy.controller.observe import target_of_template
from modeldeploy.resources.deployment import ServingTarget, build_deployment
from tests.unit.fake_kube_api import FakeApi
from tests.unit.test_resources import IMAGES, md

OWNER = {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "name": "digits", "uid": "u1",
         "controller": True, "blockOwnerDeletion": True}

SUBSET_CASES = [
    ("equal", {"a": 1}, {"a": 1}, True),
    ("server-default-ignored", {"a": 1}, {"a": 1, "b": 2}, True),
    ("value-differs", {"a": 1}, {"a": 2}, False),
    ("missing", {"a": 1}, {}, False),
    ("empty-list-vs-absent", {"envFrom": []}, {}, True),
    ("empty-map-vs-absent", {"annotations": {}}, {}, True),
    ("list-length", {"l": [1, 2]}, {"l": [1]}, False),
    ("list-items-subset", {"l": [{"name": "x"}]}, {"l": [{"name": "x", "imagePullPolicy": "IfNotPresent"}]}, True),
    ("quantity-normalised", {"resources": {"requests": {"cpu": "0.5", "memory": "1024Mi"}}},
     {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}, True),
    ("quantity-differs", {"resources": {"limits": {"cpu": "1"}}}, {"resources": {"limits": {"cpu": "2"}}}, False),
    ("quantity-only-under-resources", {"x": "0.5"}, {"x": "500m"}, False),
    ("int-or-string", {"maxSurge": 1}, {"maxSurge": "1"}, True),
    ("bool-vs-int", {"x": True}, {"x": 1}, False),
]


@pytest.mark.parametrize("name,desired,live,expected", SUBSET_CASES, ids=[c[0] for c in SUBSET_CASES])
def test_is_subset(name, desired, live, expected):
    assert diff.is_subset(desired, live, "") is expected


def _live(obj, **extra):
    live = copy.deepcopy(diff.with_owner(obj, OWNER))
    live = {**live, "metadata": {**live["metadata"], "uid": "x", "resourceVersion": "7", "generation": 3},
            "status": {"replicas": 3}}
    live["spec"] = {**live["spec"], "revisionHistoryLimit": 10, **extra}
    return live


def test_needs_apply_only_for_owned_fields():
    desired = build_deployment(md(autoscaling={"maxReplicas": 4}), None, IMAGES)
    live = _live(desired, replicas=3)                                        # the HPA's replicas: not ours
    assert not diff.needs_apply(desired, live, OWNER)
    edited = _live(desired)
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1"
    assert diff.needs_apply(desired, edited, OWNER)
    orphan = dict(live, metadata=dict(live["metadata"], ownerReferences=[]))
    assert diff.needs_apply(desired, orphan, OWNER)
    assert diff.needs_apply(desired, None, OWNER)


MERGE_CASES = [
    ("equal", {"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 2}}, {}),
    ("changed-nested", {"b": {"c": 2, "d": 1}}, {"b": {"c": 3, "d": 1}}, {"b": {"c": 3}}),
    ("removed", {"a": 1, "opt": {"x": 1}}, {"a": 1}, {"opt": None}),
    ("added", {}, {"a": [1]}, {"a": [1]}),
    ("number-same", {"r": 3}, {"r": 3.0}, {}),
    ("list-replaced", {"l": [1]}, {"l": [2]}, {"l": [2]}),
]


@pytest.mark.parametrize("name,old,new,patch", MERGE_CASES, ids=[c[0] for c in MERGE_CASES])
def test_merge_patch(name, old, new, patch):
    assert diff.merge_patch(old, new) == patch


@pytest.mark.parametrize("entries, index", [
    ([{"manager": "modeldeploy", "operation": "Update"}], 0),                       # created by our POST
    ([{"manager": "kcm", "operation": "Update", "subresource": "status"},
      {"manager": "modeldeploy", "operation": "Update"}], 1),
    ([{"manager": "modeldeploy", "operation": "Apply"}], None),                     # applied already
    ([{"manager": "modeldeploy", "operation": "Apply"}, {"manager": "modeldeploy", "operation": "Update"}], None),
    ([{"manager": "modeldeploy", "operation": "Update", "subresource": "status"}], None),
    ([], None)])
def test_create_to_apply_patch_renames_only_a_lone_update_entry_of_ours(entries, index):
    patch = diff.create_to_apply_patch({"metadata": {"managedFields": entries}}, "modeldeploy")
    if index is None:
        assert patch is None
    else:
        assert [op["path"] for op in patch] == [f"/metadata/managedFields/{index}/{k}"
                                               for k in ("manager", "operation", "operation")]
        assert patch[-1] == {"op": "replace", "path": f"/metadata/managedFields/{index}/operation", "value": "Apply"}


def test_prune_to_schema():
    schema = {"type": "object", "properties": {"model": {"type": "object", "properties": {"v": {"type": "integer"}}},
                                               "conditions": {"type": "array", "items": {"type": "object",
                                                              "properties": {"type": {"type": "string"}}}},
                                               "kopf": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}
    status = {"model": {"v": 1, "lastGoodImage": "x"}, "conditions": [{"type": "Ready", "junk": 1}],
              "kopf": {"any": 1}, "other": 2}
    assert diff.prune(status, schema) == {"model": {"v": 1}, "conditions": [{"type": "Ready"}], "kopf": {"any": 1}}


def test_target_of_template_roundtrip():
    spec = md()
    target = ServingTarget(4, "tensorflow/serving:x", "s3://m/4")
    assert target_of_template(build_deployment(spec, target, IMAGES)["spec"]["template"]) == target
    assert target_of_template({"metadata": {}, "spec": {}}) is None


def _pod(name, **status):
    return {"metadata": {"name": name, "labels": {"modeldeploy.io/version": "1"}}, "status": status}


FINDINGS = [
    ("ready", _pod("p", phase="Running", conditions=[{"type": "Ready", "status": "True"}]), None),
    ("init-failed", _pod("p", phase="Pending", initContainerStatuses=[
        {"name": "pull-model", "state": {"terminated": {"exitCode": 10, "reason": "Error",
                                                        "message": "version 3 is not published"}}}]),
     ("InitContainerFailed", "init container pull-model exited 10 (Error): version 3 is not published")),
    ("image-pull", _pod("p", phase="Pending", containerStatuses=[
        {"name": "tf-serving", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}]),
     ("ImagePullBackOff", "ImagePullBackOff: not found")),
    ("oom", _pod("p", phase="Running", containerStatuses=[
        {"name": "tf-serving", "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
         "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]),
     ("OOMKilled", "container tf-serving was OOMKilled (exit code 137, 2 restarts): raise its memory limit")),
    ("unschedulable", _pod("p", phase="Pending", conditions=[
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/4 nodes are available"}]),
     ("Unschedulable", "0/4 nodes are available")),
    ("terminating", {**_pod("p", phase="Running"), "metadata": {"name": "p", "deletionTimestamp": "x"}}, None),
]


@pytest.mark.parametrize("name,pod,expected", FINDINGS, ids=[c[0] for c in FINDINGS])
def test_pod_finding(name, pod, expected):
    found = health.pod_finding(pod)
    assert (None if found is None else (found.reason, found.message)) == expected


def test_model_state_and_unreachable_probe():
    payload = {"model_version_status": [{"version": "2", "state": "AVAILABLE"}, {"version": "1", "state": "END"}]}
    assert health.model_state(payload) == "AVAILABLE" and health.model_state(payload, 1) == "END"
    assert health.model_state({}) is None
    assert health.probe_model("http://127.0.0.1:9/v1/models/x", timeout=0.2) == (None, "")   # unknown, not failed
    failed = {"model_version_status": [{"version": "2", "state": "END", "status": {
        "error_code": "NOT_FOUND", "error_message": "Could not find SavedModel .pb or .pbtxt at /models/x/2"}}]}
    assert health.model_status(failed, 2) == ("END", "NOT_FOUND: Could not find SavedModel .pb or .pbtxt at "
                                                     "/models/x/2")
    h = health.summarize([], ready=1, desired=1, minimum=1, model_state="END",
                         model_message=health.model_status(failed)[1])
    assert h.reason == "ModelNotAvailable" and h.message.endswith("reports the model END: NOT_FOUND: Could not "
                                                                   "find SavedModel .pb or .pbtxt at /models/x/2")


def test_model_probe_stays_within_the_allowed_networks():
    import ipaddress
    from types import SimpleNamespace

    from modeldeploy.controller import gather
    local = SimpleNamespace(probe_cidrs=(ipaddress.ip_network("127.0.0.0/8"),))
    assert gather._probe_allowed(local, "127.1.0.7")
    assert not gather._probe_allowed(local, "10.244.0.12")          # kwok's simulated pods: never probed
    assert not gather._probe_allowed(local, "not-an-ip")
    assert gather._probe_allowed(SimpleNamespace(probe_cidrs=()), "10.244.0.12")   # unset: any pod


def test_a_deployment_switching_to_canary_is_replaced_orphaning_its_pods():
    """A Deployment's selector is immutable: delete it with propagationPolicy Orphan (its ReplicaSet's pods keep
    serving; the re-created Deployment adopts them), never patch it into a 422."""
    rolling = md(serving={"replicas": 2}, monitoring={"slo": {"maxP99LatencyMs": 250}})
    canary = md(serving={"replicas": 2}, monitoring={"slo": {"maxP99LatencyMs": 250}},
                rollout={"strategy": "canary", "steps": [{"weight": 50, "durationSeconds": 300}]})
    live = _live(build_deployment(rolling, None, IMAGES))
    desired = build_deployment(canary, None, IMAGES)
    assert diff.selector_replaced(desired, live) and not diff.selector_replaced(desired, None)
    assert desired["spec"]["template"] == live["spec"]["template"]           # same pods: the ReplicaSet is reused
    api = FakeApi()
    kube = apply.Kube(api.client)
    assert kube.ensure(desired, OWNER, live) == ("replaced", None)
    [delete] = api.writes()
    assert delete.method == "DELETE" and delete.path == "/apis/apps/v1/namespaces/ml/deployments/digits"
    assert delete.body["propagationPolicy"] == "Orphan" and delete.body["preconditions"] == {"uid": "x"}
    # Back to rolling: the canary selector already selects every stable pod; nothing to replace.
    assert not diff.selector_replaced(build_deployment(rolling, None, IMAGES), _live(desired))
