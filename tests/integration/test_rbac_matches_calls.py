"""The chart grants the operator exactly what it calls, derived from its calls: the API server's audit log
(.cluster/logs/audit.log, written by hack/cluster-up.sh for every ServiceAccount request) holds every request
the tests' operators made as the chart's ServiceAccount (tests/fixtures/operator.py): reads (get, list,
watch) and writes, Kopf's own included. Every one of them is granted by the chart, and every rule the chart
grants was used by some test, so a grant the code never uses fails here, as does a call the chart would refuse.

It judges what the other tests' operators did, so it is marked `session_end`: tests/conftest.py runs such tests
after every other test of the session, wherever they sit and whatever their names (and the test checks that it
did run last). Run alone, it fails for want of calls to judge.
"""
from __future__ import annotations

import json

import pytest

from tests.fixtures.operator import CHART_NAMESPACE, REPO, chart_rbac

pytestmark = [pytest.mark.cluster, pytest.mark.session_end]

AUDIT_LOG = REPO / ".cluster" / "logs" / "audit.log"
WRITES = {"create", "patch", "update", "delete", "deletecollection"}
# Checked by the OwnerReferencesPermissionEnforcement admission plugin (on in hack/cluster-up.sh) when a child
# with blockOwnerDeletion is written, never a request of its own: without it every child write is refused.
ADMISSION_ONLY = {("modeldeploy.io", "modeldeployments/finalizers", "update")}


def _rules(objs: list[dict]) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for role in objs for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def granted() -> set[tuple[str, str, str]]:
    """(API group, resource, verb) the chart grants the test operators: the Role of a watched namespace and
    the ClusterRole of the namespaced install (cluster-scoped reads)."""
    return _rules([d for d in chart_rbac([CHART_NAMESPACE]) if d["kind"] in ("Role", "ClusterRole")])


def audited_calls() -> tuple[set[tuple[str, str, str]], list[str]]:
    """(API group, resource[/subresource], verb) of every request by the chart's ServiceAccount, and the
    requests the API server refused (403)."""
    sa = next(d for d in chart_rbac([CHART_NAMESPACE]) if d["kind"] == "ServiceAccount")["metadata"]["name"]
    user = f"system:serviceaccount:{CHART_NAMESPACE}:{sa}"
    used, refused = set(), []
    assert AUDIT_LOG.exists(), f"{AUDIT_LOG} is missing: the cluster must be started by hack/cluster-up.sh"
    for path in sorted(AUDIT_LOG.parent.glob("audit*.log")):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            ref = entry.get("objectRef")
            if entry.get("user", {}).get("username") != user or not ref or not ref.get("resource"):
                continue          # another account, or discovery (/api, /apis: open to every account)
            resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            call = (ref.get("apiGroup", ""), resource, entry["verb"])
            used.add(call)
            code = (entry.get("responseStatus") or {}).get("code")
            if entry["verb"] == "patch" and code == 201:   # a server-side apply that created the object
                used.add(call[:2] + ("create",))
            if code == 403:
                refused.append(f"{entry['verb']} {entry.get('requestURI')}")
    return used, refused


def test_the_charts_grants_are_exactly_the_calls_the_operator_makes(request):
    after = request.session.items[request.session.items.index(request.node) + 1:]
    assert all(item.get_closest_marker("session_end") for item in after), (
        f"{[item.nodeid for item in after if not item.get_closest_marker('session_end')][:5]} run after this test: "
        "their operators' calls would not be judged (tests/conftest.py must order session_end tests last)")
    used, refused = audited_calls()
    assert not refused, f"the chart's RBAC refused the operator: {refused[:5]}"
    assert len({c for c in used if c[2] in WRITES}) >= 10, (
        f"too few audited operator calls to judge ({sorted(used)}): run the whole suite")
    rules = granted() - ADMISSION_ONLY
    assert used - rules == set(), f"the operator calls what the chart does not grant: {sorted(used - rules)}"
    assert rules - used == set(), (f"the chart grants calls no test's operator made (remove them, or test "
                                   f"the code path that needs them): {sorted(rules - used)}")
