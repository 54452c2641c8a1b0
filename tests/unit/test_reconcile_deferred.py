"""reconcile() with `may_defer` (a new object's first pass, or a pass in a burst; controller/monitor.py): an
object never reported creates its children and puts off its status and Events until its rollout is done; an
object the operator has handled before, or a pass that may not defer, writes its status at once. Requests as
the kubernetes client sends them (tests/unit/fake_kube_api.py), the read cache empty at first."""
from __future__ import annotations

import pytest

from modeldeploy.controller import apply
from modeldeploy.controller.context import Context
from modeldeploy.controller.reconcile import reconcile
from tests.unit.fake_kube_api import FakeApi

NEW = {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
       "metadata": {"name": "digits", "namespace": "ml", "uid": "u1", "generation": 1, "resourceVersion": "5"},
       "spec": {"model": {"uri": "s3://models/digits/base", "version": 3, "storageSecret": "model-store"}},
       "status": {"observedGeneration": 0}}        # the CRD's default status: never handled


def context() -> tuple[FakeApi, Context]:
    api = FakeApi()
    ctx = Context(kube=apply.Kube(api.client, cache=lambda kind, ns, name: []), probe_models=False)
    ctx.load_schema()
    return api, ctx


def run(body: dict, may_defer: bool):
    api, ctx = context()
    start = len(api.calls)
    result = reconcile(body, ctx, may_defer=may_defer)
    return result, [(c.method, c.path.rsplit("/", 1)[-1]) for c in api.calls[start:] if c.method != "GET"]


def test_a_first_pass_that_may_defer_creates_the_children_and_puts_off_status_and_events():
    result, writes = run(NEW, may_defer=True)
    assert result.deferred and not result.status_written and result.events == []
    assert writes == [("POST", "networkpolicies"), ("POST", "services"),
                      ("POST", "deployments")]


@pytest.mark.parametrize("body", [NEW, dict(NEW, status={})], ids=["default-status", "no-status"])
def test_a_pass_that_may_not_defer_writes_status_and_the_rollout_event(body):
    result, writes = run(body, may_defer=False)
    assert not result.deferred and result.status_written
    assert writes[-1] == ("PATCH", "status") and [e[1] for e in result.events] == ["RolloutStarted"]


def test_a_pass_of_a_handled_object_writes_its_status_even_if_it_may_defer():
    handled = dict(NEW, metadata=dict(NEW["metadata"], generation=2), status={"observedGeneration": 1})
    result, writes = run(handled, may_defer=True)
    assert not result.deferred and result.status_written and writes[-1] == ("PATCH", "status")


def settled(deployment: dict, ready: bool) -> dict:
    """The Deployment as its controller reports it: rolled out to one ready replica, or not yet."""
    status = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
              "availableReplicas": 1} if ready else {}
    return dict(deployment, metadata=dict(deployment["metadata"], generation=1, uid="d1"), status=status)


def pod(deployment: dict) -> dict:
    """A running, ready pod of the Deployment's template."""
    template = deployment["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod", "spec": template["spec"],
            "metadata": dict(template["metadata"], name="digits-1", namespace="ml", uid="p1"),
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": c["name"], "ready": True, "restartCount": 0,
                                              "state": {"running": {}}} for c in template["spec"]["containers"]]}}


@pytest.mark.parametrize("ready", [False, True], ids=["rolling-out", "ready"])
def test_a_later_pass_that_may_defer_puts_off_the_first_status_until_the_rollout_is_done(ready):
    api, ctx = context()
    reconcile(NEW, ctx, may_defer=True)
    created = {c.body["kind"]: c.body for c in api.calls if c.method == "POST"}
    created["Deployment"] = settled(created["Deployment"], ready)
    if ready:
        created["Pod"] = pod(created["Deployment"])
    ctx.kube.cache = lambda kind, ns, name: [created[kind]] if kind in created else []
    start = len(api.calls)
    result = reconcile(NEW, ctx, may_defer=True)
    writes = [(c.method, c.path.rsplit("/", 1)[-1]) for c in api.calls[start:] if c.method != "GET"]
    if ready:       # one status write and one Event for the whole rollout
        assert not result.deferred and writes == [("PATCH", "status")]
        assert [e[1] for e in result.events] == ["RolloutCompleted"]
    else:
        assert result.deferred and writes == [] and result.events == []


def test_the_job_started_event_comes_with_the_first_report_whatever_the_job_does_by_then():
    """The pass that creates the optimizer Job puts off its Events; the pass that reports finds the Job running
    (not new any more) and still says JobStarted, once."""
    body = dict(NEW, spec=dict(NEW["spec"], optimization={"pruning": {"sparsity": 0.5},
                                                         "outputUri": "s3://models/digits/optimized"}))
    api, ctx = context()
    first = reconcile(body, ctx, may_defer=True)
    assert first.deferred and first.events == [] and "Job created" in first.actions
    created = {c.body["kind"]: c.body for c in api.calls if c.method == "POST"}
    job = dict(created["Job"], metadata=dict(created["Job"]["metadata"], uid="j1"), status={"active": 1})
    ctx.kube.cache = lambda kind, ns, name: [job] if kind == "Job" else []
    second = reconcile(body, ctx)
    assert second.status_written and [e[1] for e in second.events] == ["JobStarted"]
    again = reconcile(dict(body, status=second.body["status"]), ctx)
    assert again.events == []
