"""The operator against the local cluster: children, zero writes when idle, drift repair next to the HPA, a failed
optimization, restarts, name conflicts, refused children, and garbage collection. (The crash-looping rollout
rolled back and the unschedulable GPU request run once, in tests/integration/test_observability_scenarios.py,
with their conditions, Events, metrics and Argo CD health checked together.)

Serving pods are played by kwok (Running and Ready at once, or crash-looping when the image name says so), so
these tests need no model in storage: nothing here optimizes (see tests/e2e for the real optimizer Job).
"""
from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.fixtures.cluster import wait_for
from tests.fixtures.operator import (apply_md, condition, events, get, get_md, is_ready, md_body, wait_md)

pytestmark = pytest.mark.cluster

FAST = {"monitoring": {"intervalSeconds": 5, "failureThreshold": 2}, "rollout": {"progressDeadlineSeconds": 30}}


def deployment_image(kubectl, ns, name) -> str:
    dep = get(kubectl, ns, "deployment", name)
    return next(c["image"] for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "tf-serving")


def test_render_passes_server_dry_run_under_restricted_pod_security(kubectl, namespace):
    """Every child `modeldeploy render` prints is valid for this API server and passes PodSecurity restricted."""
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", "--overwrite")
    from modeldeploy.api import spec as specmod
    from modeldeploy.resources import render
    docs = []
    for path in ("examples/gpu-pruned-int8-autoscaling.yaml", "examples/cpu-as-is.yaml", "examples/cpu-tflite-int8.yaml"):
        body = yaml.safe_load(open(path))
        body["metadata"]["namespace"] = namespace
        docs += render.build_all(specmod.parse(body))
    proc = kubectl("apply", "--dry-run=server", "-f", "-", input=render.dump(docs), namespace=namespace, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr          # PodSecurity warnings would be printed here
    kinds = re.findall(r"^(\S+)/", proc.stdout, re.M)
    assert sorted(set(kinds)) == sorted({"job.batch", "service", "deployment.apps",
                                         "horizontalpodautoscaler.autoscaling", "poddisruptionbudget.policy",
                                         "networkpolicy.networking.k8s.io"})


@pytest.mark.timeout(240)
def test_serves_as_is_ready_children_owned_and_zero_writes_when_idle(kubectl, namespace, operator):
    apply_md(kubectl, namespace, md_body("iris", serving={"replicas": 2}, **FAST))
    md = wait_md(kubectl, namespace, "iris", is_ready, 60, "Ready")
    st = md["status"]
    assert st["model"]["servingVersion"] == 1 and st["model"]["lastGoodVersion"] == 1
    assert st["serving"]["readyReplicas"] == 2 and st["phase"] == "Ready"
    assert condition(md, "Optimized")["reason"] == "NotRequested"
    uid = md["metadata"]["uid"]
    for kind, name in (("deployment", "iris"), ("service", "iris"), ("poddisruptionbudget", "iris"),
                       ("networkpolicy", "iris")):
        obj = get(kubectl, namespace, kind, name)
        refs = obj["metadata"]["ownerReferences"]
        assert refs == [{"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "name": "iris",
                         "uid": uid, "controller": True, "blockOwnerDeletion": True}], (kind, refs)
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "modeldeploy"
    assert get(kubectl, namespace, "hpa", "iris") is None
    dep = json.loads(kubectl("get", "deployment", "iris", "-o", "json", "--show-managed-fields",
                             namespace=namespace).stdout)
    assert dep["spec"]["replicas"] == 2
    # Created with a POST (its name checked by the create itself): the operator alone wrote the spec.
    assert {m["manager"] for m in dep["metadata"]["managedFields"] if not m.get("subresource")} == {"modeldeploy"}
    reasons = [e["reason"] for e in events(kubectl, namespace, "iris")]
    # RolloutStarted too when the first status was written before the pods were ready (a new object's first
    # pass puts its status off to the next one, controller/monitor.py): one Event per transition either way.
    assert reasons.count("RolloutStarted") <= 1 and reasons.count("RolloutCompleted") == 1, reasons

    # Kopf keeps no state on the object: no diff-base or progress annotations, no finalizer (one event handler is
    # registered; the monitor reconciles).
    meta = md["metadata"]
    assert not [k for k in meta.get("annotations") or {} if k.startswith("kopf")], meta.get("annotations")
    assert not meta.get("finalizers"), meta["finalizers"]

    # Idle: several health checks (every 2 s) and not one write. Our apply module's writes are counted on the
    # operator's side (the API server's own counters have no namespace, and other tests may share the cluster;
    # bench/operator_scale.py measures the API server's counters on a dedicated run); anyone's write to the
    # ModelDeployment itself, Kopf's included, would change its resourceVersion.
    # First the creation's writes end: a whole reconcile passes without one.
    def settled() -> bool:
        before = len(operator.writes())
        operator.wait_reconciles(1, 30, "a reconcile")
        return before == len(operator.writes())
    wait_for(settled, 60, "a reconcile that writes nothing after the creation")
    before_ops = len(operator.writes())
    assert before_ops > 0, "the write log must have seen the creation's writes"
    version = get_md(kubectl, namespace, "iris")["metadata"]["resourceVersion"]
    operator.wait_reconciles(4, 60, "four more health checks (the monitor did not run)")
    assert operator.writes()[before_ops:] == []
    # A restart finds nothing to change either: the pass over the listed objects and a health check.
    operator.restart(hard=False)
    operator.wait_reconciles(2, 60, "the restarted operator's first pass and a health check")
    assert operator.writes()[before_ops:] == []
    assert get_md(kubectl, namespace, "iris")["metadata"]["resourceVersion"] == version


@pytest.mark.timeout(240)
def test_user_edit_is_reverted_and_hpa_replicas_are_left_alone(kubectl, namespace, operator):
    # A soft affinity the final spec drops: the operator's apply removes a field it stops sending, although it
    # created the Deployment with a POST (its managedFields entry is turned into an apply's first).
    preferred = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "preference": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["ml"]}]}}]}}
    apply_md(kubectl, namespace, md_body("edit", autoscaling={"minReplicas": 1, "maxReplicas": 4},
                                         serving={"affinity": preferred}, **FAST))
    wait_md(kubectl, namespace, "edit", is_ready, 60, "Ready")
    dep = get(kubectl, namespace, "deployment", "edit")
    assert dep["spec"]["replicas"] == 1
    hpa = get(kubectl, namespace, "hpa", "edit")
    assert hpa["spec"]["minReplicas"] == 1 and hpa["spec"]["maxReplicas"] == 4
    assert get(kubectl, namespace, "pdb", "edit") is not None      # maxReplicas > 1
    # What the HPA does: scale through the scale subresource. Then a user edits a field the operator owns.
    kubectl("scale", "deployment/edit", "--replicas=3", namespace=namespace)
    kubectl("set", "image", "deployment/edit", "tf-serving=registry.local/evil:1", namespace=namespace)
    wait_for(lambda: deployment_image(kubectl, namespace, "edit") == "tensorflow/serving:2.21.0", 30,
             "the operator to revert the image")
    dep = get(kubectl, namespace, "deployment", "edit")
    assert dep["spec"]["replicas"] == 3, "the operator must leave replicas to the HPA"
    # An edit of any other child is reverted too (at the next health check: only Deployments and Jobs wake
    # their ModelDeployment), by an apply to an object the operator created with a POST.
    edits = {("service", "edit"): ({"spec": {"selector": {"app.kubernetes.io/instance": "other"}}},
                                   lambda o: o["spec"]["selector"]["app.kubernetes.io/instance"]),
             ("networkpolicy", "edit"): ({"spec": {"policyTypes": ["Ingress"]}}, lambda o: o["spec"]["policyTypes"]),
             ("hpa", "edit"): ({"spec": {"maxReplicas": 9}}, lambda o: o["spec"]["maxReplicas"]),
             ("pdb", "edit"): ({"spec": {"maxUnavailable": 3}}, lambda o: o["spec"]["maxUnavailable"])}
    for (kind, name), (patch, field) in edits.items():
        wanted = field(get(kubectl, namespace, kind, name))
        out = kubectl("patch", kind, name, "--type=merge", "-p", json.dumps(patch), namespace=namespace).stdout
        assert "no change" not in out, out
        edits[(kind, name)] = (wanted, field)
    for (kind, name), (wanted, field) in edits.items():
        wait_for(lambda: field(get(kubectl, namespace, kind, name)) == wanted, 30, f"the {kind} edit reverted")
    wait_md(kubectl, namespace, "edit", lambda o: is_ready(o) and o["status"]["serving"]["readyReplicas"] == 3, 60,
            "Ready on 3 replicas")
    # Turning autoscaling off deletes the HPA and the operator owns replicas again.
    apply_md(kubectl, namespace, md_body("edit", serving={"replicas": 1}, **FAST))
    wait_for(lambda: get(kubectl, namespace, "hpa", "edit") is None, 30, "the HPA to be deleted")
    wait_for(lambda: get(kubectl, namespace, "pdb", "edit") is None, 30, "the PDB to be deleted")
    wait_for(lambda: get(kubectl, namespace, "deployment", "edit")["spec"]["replicas"] == 1, 30, "replicas 1")
    dep = json.loads(kubectl("get", "deployment", "edit", "-o", "json", "--show-managed-fields",
                             namespace=namespace).stdout)
    assert "affinity" not in dep["spec"]["template"]["spec"]
    assert [m["operation"] for m in dep["metadata"]["managedFields"]
            if m["manager"] == "modeldeploy" and not m.get("subresource")] == ["Apply"]
    # And on again, with the affinity back: the HPA and PDB are created in a pass that also changes the
    # Deployment, so their names are read first (a taken one would leave the Deployment as it was, not
    # half-changed).
    apply_md(kubectl, namespace, md_body("edit", autoscaling={"minReplicas": 1, "maxReplicas": 4},
                                         serving={"affinity": preferred}, **FAST))
    wait_for(lambda: get(kubectl, namespace, "hpa", "edit") is not None, 30, "the HPA again")
    wait_for(lambda: get(kubectl, namespace, "pdb", "edit") is not None, 30, "the PDB again")
    assert get(kubectl, namespace, "deployment", "edit")["spec"]["template"]["spec"]["affinity"] == preferred
    assert [r["verb"] for r in operator.writes() if r["kind"] == "HorizontalPodAutoscaler"] == [
        "create", "fields-to-apply", "apply", "delete", "create"]


@pytest.mark.timeout(300)
def test_failed_optimization_leaves_the_old_version_serving(kubectl, namespace, operator, s3, s3_prefix):
    apply_md(kubectl, namespace, md_body("opt", **FAST))
    wait_md(kubectl, namespace, "opt", is_ready, 60, "version 1 Ready")
    missing = f"s3://models/{s3_prefix}/does-not-exist"
    apply_md(kubectl, namespace, md_body("opt", version=2, model={"uri": missing},
                                         optimization={"quantization": {"mode": "dynamic"},
                                                       "outputUri": f"s3://models/{s3_prefix}/out"}, **FAST))
    md = wait_md(kubectl, namespace, "opt", lambda o: condition(o, "Stalled").get("status") == "True"
                 and o["status"]["observedGeneration"] == o["metadata"]["generation"], 180,
                 "the optimization Job to fail")
    opt = condition(md, "Optimized")
    assert (opt["status"], opt["reason"]) == ("False", "JobFailed") and "NotFound" in opt["message"]
    assert "version 1 keeps serving" in condition(md, "Stalled")["message"]
    assert condition(md, "Available")["status"] == "True" and md["status"]["model"]["servingVersion"] == 1
    dep = get(kubectl, namespace, "deployment", "opt")
    assert dep["spec"]["template"]["metadata"]["labels"]["modeldeploy.io/version"] == "1"
    jobs = json.loads(kubectl("get", "jobs", "-o", "json", namespace=namespace).stdout)["items"]
    assert len(jobs) == 1 and jobs[0]["metadata"]["labels"]["modeldeploy.io/version"] == "2"
    text = json.dumps(jobs[0]) + json.dumps(md["status"])
    assert s3.secret_key not in text       # credentials only via envFrom (the access key "modeldeploy" is our name)
    assert [e["reason"] for e in events(kubectl, namespace, "opt")].count("JobFailed") == 1


@pytest.mark.timeout(300)
def test_sigkill_mid_rollout_then_restart_completes_and_gc_leaves_no_orphans(kubectl, namespace, operator):
    apply_md(kubectl, namespace, md_body("kill", serving={"replicas": 2}, **FAST))
    wait_md(kubectl, namespace, "kill", is_ready, 60, "version 1 Ready")
    apply_md(kubectl, namespace, md_body("kill", version=2, serving={"replicas": 2}, **FAST))
    wait_for(lambda: get(kubectl, namespace, "deployment", "kill")["spec"]["template"]["metadata"]["labels"]
             ["modeldeploy.io/version"] == "2", 30, "the rollout of version 2 to start")
    operator.kill()
    operator.start()
    md = wait_md(kubectl, namespace, "kill", lambda o: is_ready(o) and o["status"]["model"].get("servingVersion") == 2,
                 90, "version 2 Ready after the restart")
    assert md["status"]["model"]["lastGoodVersion"] == 2
    assert [d["metadata"]["name"] for d in json.loads(kubectl("get", "deployments", "-o", "json",
                                                              namespace=namespace).stdout)["items"]] == ["kill"]
    # Deleting the ModelDeployment lets the garbage collector remove every child.
    kubectl("delete", "modeldeployment", "kill", "--wait=true", "--timeout=60s", namespace=namespace)

    def leftovers():
        kinds = "deployments,replicasets,services,poddisruptionbudgets,hpa,jobs,networkpolicies"
        out = kubectl("get", kinds, "-o", "name", "-l", "app.kubernetes.io/instance=kill",
                      namespace=namespace).stdout.split()
        return out or None
    wait_for(lambda: leftovers() is None, 60, "garbage collection of the children")


@pytest.mark.timeout(180)
def test_a_name_taken_by_someone_elses_object_is_never_taken_over(kubectl, namespace, operator):
    """A ModelDeployment named after an existing Service: Stalled NameConflict, found by the Service's create
    (no GET per child before): what comes before it in the apply order is created, ours; nothing after it. The
    Service is untouched, and deleting the ModelDeployment leaves it. Once the name is free the model is served."""
    victim = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "taken", "labels": {"team": "web"}},
              "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}
    kubectl("create", "-f", "-", input=json.dumps(victim), namespace=namespace)
    before = get(kubectl, namespace, "service", "taken")
    apply_md(kubectl, namespace, md_body("taken", **FAST))
    md = wait_md(kubectl, namespace, "taken", lambda o: condition(o, "Stalled").get("reason") == "NameConflict",
                 60, "Stalled NameConflict")
    message = condition(md, "Stalled")["message"]
    assert f"Service {namespace}/taken already exists and is not controlled by it" in message, message
    assert condition(md, "Ready")["status"] == "False" and condition(md, "Reconciling")["status"] == "False"
    assert get(kubectl, namespace, "deployment", "taken") is None        # after the Service: never written
    policy = get(kubectl, namespace, "networkpolicy", "taken")             # before it: created, ours
    assert [r["uid"] for r in policy["metadata"]["ownerReferences"]] == [md["metadata"]["uid"]]
    after = get(kubectl, namespace, "service", "taken")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert "ownerReferences" not in after["metadata"]
    assert [e["reason"] for e in events(kubectl, namespace, "taken")].count("NameConflict") == 1
    writes = len(operator.writes())
    operator.wait_reconciles(2, 30, "two health checks of the stalled object")
    assert operator.writes()[writes:] == []       # its retries read the names: no create bound to fail

    # A witness the ModelDeployment does own: once the garbage collector has removed it, it has dealt with the
    # ModelDeployment's deletion, and the Service it never owned must still be there.
    witness = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "taken-gc-witness", "ownerReferences": [
        {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "name": "taken",
         "uid": md["metadata"]["uid"]}]}}
    kubectl("create", "-f", "-", input=json.dumps(witness), namespace=namespace)
    kubectl("delete", "modeldeployment", "taken", "--wait=true", "--timeout=60s", namespace=namespace)
    wait_for(lambda: get(kubectl, namespace, "configmap", "taken-gc-witness") is None, 60,
             "the garbage collector to remove the ModelDeployment's dependents")
    assert get(kubectl, namespace, "service", "taken")["metadata"]["uid"] == before["metadata"]["uid"]

    kubectl("delete", "service", "taken", namespace=namespace)
    apply_md(kubectl, namespace, md_body("taken", **FAST))
    wait_md(kubectl, namespace, "taken", is_ready, 90, "Ready once the name is free")


@pytest.mark.parametrize("victim", [
    {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "held-np"},
     "spec": {"podSelector": {"matchLabels": {"app": "web"}}}}], ids=["NetworkPolicy"])
def test_a_taken_networkpolicy_name_is_found_by_its_create_and_left_alone(kubectl, namespace, operator, victim):
    """The create's 409 is answered by a GET of that kind (the chart grants it for every child kind): whoever
    holds the name is named in Stalled NameConflict, and the object is left as it was."""
    kubectl("create", "-f", "-", input=json.dumps(victim), namespace=namespace)
    kind, md_name = victim["kind"], victim["metadata"]["name"]
    before = get(kubectl, namespace, kind.lower(), victim["metadata"]["name"])
    apply_md(kubectl, namespace, md_body(md_name, **FAST))
    md = wait_md(kubectl, namespace, md_name, lambda o: condition(o, "Stalled").get("reason") == "NameConflict",
                 60, "Stalled NameConflict")
    message = condition(md, "Stalled")["message"]
    assert f"{kind} {namespace}/{victim['metadata']['name']} already exists and is not controlled" in message
    after = get(kubectl, namespace, kind.lower(), victim["metadata"]["name"])
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert get(kubectl, namespace, "deployment", md_name) is None


@pytest.mark.timeout(180)
def test_a_child_the_api_server_refuses_is_stalled_invalid_spec_with_the_servers_message(kubectl, namespace,
                                                                                       operator):
    """A spec the parser accepts but the API server refuses in a child (an affinity, passed through as it is,
    with an operator Kubernetes does not know) is reported, not retried in a hot loop without a condition."""
    bogus = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "team", "operator": "Sometimes", "values": ["ml"]}]}]}}}
    apply_md(kubectl, namespace, md_body("refused", serving={"affinity": bogus}, **FAST))
    md = wait_md(kubectl, namespace, "refused", lambda o: condition(o, "Stalled").get("reason") == "InvalidSpec",
                 60, "Stalled InvalidSpec")
    message = condition(md, "Stalled")["message"]
    assert "the API server refused a child" in message and "affinity" in message, message
    assert "Sometimes" in message and md["status"]["phase"] == "Failed", message
    reasons = [e["reason"] for e in events(kubectl, namespace, "refused")]
    assert reasons.count("InvalidSpec") == 1, reasons
    # A fixed spec goes on by itself.
    apply_md(kubectl, namespace, md_body("refused", **FAST))
    wait_md(kubectl, namespace, "refused", is_ready, 60, "Ready once the spec is fixed")


@pytest.mark.timeout(180)
def test_the_pods_network_policy_and_its_removal_by_the_administrator(kubectl, namespace, operator):
    apply_md(kubectl, namespace, md_body("netpol", **FAST))
    wait_md(kubectl, namespace, "netpol", is_ready, 60, "Ready")
    policy = get(kubectl, namespace, "networkpolicy", "netpol")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["egress"][1]["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}}]
    pods = json.loads(kubectl("get", "pods", "-l", "app.kubernetes.io/instance=netpol", "-o", "json",
                              namespace=namespace).stdout)["items"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert pods and all(selector.items() <= p["metadata"]["labels"].items() for p in pods)
    # The administrator turns the policies off (MODELDEPLOY_EGRESS_CIDRS=none): the operator deletes its own.
    operator.stop()
    operator.extra_env["MODELDEPLOY_EGRESS_CIDRS"] = "none"
    operator.start()
    wait_for(lambda: get(kubectl, namespace, "networkpolicy", "netpol") is None, 60, "the NetworkPolicy deleted")
    assert is_ready(get_md(kubectl, namespace, "netpol"))
