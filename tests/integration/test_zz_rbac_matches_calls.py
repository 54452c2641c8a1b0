"""The chart grants the operator exactly the writes it makes, derived from its calls: every write any test's
operator made in this session (their write logs, .cluster/logs/operator-*.writes.jsonl) is granted by the
chart's rules, and every write verb the chart grants on a child kind was used by some test. So a grant the code
never uses fails here, as does a write the chart would refuse. Named test_zz so it runs after the operator tests.
Reads (get/list/watch) are not logged; Kopf's own writes to ModelDeployments and Events are its library's.
"""
from __future__ import annotations

import json

import pytest
import yaml

from tests.fixtures.operator import REPO, chart_rbac

pytestmark = pytest.mark.cluster

# The operator's write-log kinds -> (API group, resource).
RESOURCES = {"ConfigMap": ("", "configmaps"), "Service": ("", "services"), "Deployment": ("apps", "deployments"),
             "HorizontalPodAutoscaler": ("autoscaling", "horizontalpodautoscalers"),
             "PodDisruptionBudget": ("policy", "poddisruptionbudgets"), "Job": ("batch", "jobs"),
             "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
             "ServiceMonitor": ("monitoring.coreos.com", "servicemonitors")}
# A server-side apply is a PATCH that may create the object: it needs patch and create.
VERBS = {"apply": {"patch", "create"}, "create": {"create"}, "delete": {"delete"}}
WRITES = {"create", "patch", "update", "delete", "deletecollection"}


def used_writes() -> set[tuple[str, str, str]]:
    used = set()
    for path in (REPO / ".cluster" / "logs").glob("operator-*.writes.jsonl"):
        for line in path.read_text().splitlines():
            entry = json.loads(line) if line.strip() else {}
            if entry.get("kind") in RESOURCES:
                group, resource = RESOURCES[entry["kind"]]
                used |= {(group, resource, verb) for verb in VERBS[entry["verb"]]}
    return used


def granted_writes() -> set[tuple[str, str, str]]:
    role = next(d for d in chart_rbac(["x"]) if d["kind"] == "Role")
    return {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]
            if verb in WRITES and (group, resource) in RESOURCES.values()}


def test_the_charts_write_grants_are_exactly_the_writes_the_operator_makes():
    used = used_writes()
    assert len(used) >= 10, f"too few operator write logs to judge ({sorted(used)}): run the whole suite"
    granted = granted_writes()
    assert used - granted == set(), f"the operator writes what the chart does not grant: {sorted(used - granted)}"
    assert granted - used == set(), (f"the chart grants writes no test's operator made (remove them, or test "
                                     f"the code path that needs them): {sorted(granted - used)}")


def test_the_kustomize_manifests_grant_the_same_writes():
    docs = [d for d in yaml.safe_load_all((REPO / "manifests" / "base" / "rbac.yaml").read_text()) if d]
    role = next(d for d in docs if d["kind"] == "ClusterRole" and any(
        "deployments" in r["resources"] for r in d["rules"]))
    kustomize = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
                 for v in rule["verbs"] if v in WRITES and (g, r) in RESOURCES.values()}
    assert kustomize == granted_writes()
