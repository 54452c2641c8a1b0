"""reconcile() on a crowded monitor (more work due than workers, controller/monitor.py): a new object's first pass
creates its children and puts off its status and Events; an object the operator has handled before, or a pass
on a monitor with free workers, writes its status at once. Requests as the kubernetes client sends them
(tests/unit/fake_kube_api.py), the read cache empty."""
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


def run(body: dict, crowded: bool):
    api = FakeApi()
    ctx = Context(kube=apply.Kube(api.client, cache=lambda kind, ns, name: []), probe_models=False)
    ctx.load_schema()
    start = len(api.calls)
    result = reconcile(body, ctx, crowded=crowded)
    return result, [(c.method, c.path.rsplit("/", 1)[-1]) for c in api.calls[start:] if c.method != "GET"]


def test_a_crowded_first_pass_creates_the_children_and_puts_off_status_and_events():
    result, writes = run(NEW, crowded=True)
    assert result.deferred and not result.status_written and result.events == []
    assert writes == [("POST", "networkpolicies"), ("POST", "configmaps"), ("POST", "services"),
                      ("POST", "deployments")]


@pytest.mark.parametrize("body", [NEW, dict(NEW, status={})], ids=["default-status", "no-status"])
def test_with_free_workers_the_first_pass_writes_status_and_the_rollout_event(body):
    result, writes = run(body, crowded=False)
    assert not result.deferred and result.status_written
    assert writes[-1] == ("PATCH", "status") and [e[1] for e in result.events] == ["RolloutStarted"]


def test_a_crowded_pass_of_a_handled_object_writes_its_status():
    handled = dict(NEW, metadata=dict(NEW["metadata"], generation=2), status={"observedGeneration": 1})
    result, writes = run(handled, crowded=True)
    assert not result.deferred and result.status_written and writes[-1] == ("PATCH", "status")
