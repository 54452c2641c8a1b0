"""The kustomize manifests and the GitOps examples render (`kubectl kustomize`, `helm template`: no cluster) and
agree with the chart. The API server's verdict on them (server-side dry-run) is in
tests/integration/test_manifests.py.
"""
from __future__ import annotations

import pytest
import yaml

from tests.chart import ROOT, helm_template, kustomize
from tests.fixtures.operator import CHART_NAMESPACE, chart_rbac

KUSTOMIZATIONS = ["manifests/base", "manifests/overlays/example", "manifests/flux", "manifests/flux/models"]


def find(objs: list[dict], kind: str, name: str | None = None) -> dict:
    matches = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def container(objs: list[dict]) -> dict:
    return find(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def norm_rules(rules: list[dict]) -> list[tuple]:
    """Rules as a sorted list of (group, resource, verbs) so order and grouping do not matter."""
    out = set()
    for r in rules:
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                out.add((g, res, tuple(sorted(r["verbs"]))))
    return sorted(out)


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_kustomize_renders(path):
    objs = kustomize(ROOT / path)
    assert objs, f"{path} rendered nothing"
    for o in objs:
        assert o.get("apiVersion") and o.get("kind") and o["metadata"].get("name"), o


def test_base_has_what_an_install_needs():
    kinds = {(o["kind"], o["metadata"]["name"]) for o in kustomize(ROOT / "manifests/base")}
    assert {("Namespace", "modeldeploy-system"), ("ServiceAccount", "modeldeploy"),
            ("ClusterRole", "modeldeploy-cluster"), ("ClusterRoleBinding", "modeldeploy-cluster"),
            ("Deployment", "modeldeploy"), ("Service", "modeldeploy-metrics"),
            ("CustomResourceDefinition", "modeldeployments.modeldeploy.io"),
            ("CustomResourceDefinition", "clusterkopfpeerings.kopf.dev"),
            ("CustomResourceDefinition", "kopfpeerings.kopf.dev")} <= kinds


def test_base_matches_the_chart_defaults():
    """The base is the chart with default values: same RBAC, command, args, environment, probes, security."""
    base, chart = kustomize(ROOT / "manifests/base"), helm_template()
    assert norm_rules(find(base, "ClusterRole")["rules"]) == norm_rules(find(chart, "ClusterRole")["rules"])
    b, c = container(base), container(chart)
    for field in ("command", "args", "ports", "livenessProbe", "readinessProbe", "securityContext", "resources",
                  "volumeMounts"):
        assert b[field] == c[field], f"container.{field} differs between manifests/base and the chart"
    assert {e["name"]: e for e in b["env"]} == {e["name"]: e for e in c["env"]}
    bpod = find(base, "Deployment")["spec"]["template"]["spec"]
    cpod = find(chart, "Deployment")["spec"]["template"]["spec"]
    assert bpod["securityContext"] == cpod["securityContext"]
    assert bpod["volumes"] == cpod["volumes"]
    assert find(base, "Deployment")["spec"]["strategy"] == find(chart, "Deployment")["spec"]["strategy"]
    # The selector of the Service reaches the operator pods.
    labels = bpod and find(base, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert find(base, "Service")["spec"]["selector"].items() <= labels.items()


def test_overlay_runs_two_peered_replicas():
    objs = kustomize(ROOT / "manifests/overlays/example")
    deploy = find(objs, "Deployment")
    assert deploy["spec"]["replicas"] == 2
    args = container(objs)["args"]
    assert "--peering=modeldeploy" in args and "--standalone" not in args
    assert find(objs, "ClusterKopfPeering")["metadata"]["name"] == "modeldeploy"
    assert ("kopf.dev", "clusterkopfpeerings", ("get", "list", "patch", "watch")) in \
        norm_rules(find(objs, "ClusterRole")["rules"])
    pdb = find(objs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    # The same as the chart's HA rendering, where it matters.
    chart = helm_template("--set", "replicaCount=2")
    assert norm_rules(find(objs, "ClusterRole")["rules"]) == norm_rules(find(chart, "ClusterRole")["rules"])
    assert deploy["spec"]["strategy"] == find(chart, "Deployment")["spec"]["strategy"]


def test_no_secret_access_and_no_wildcards():
    """Secrets: none (as the chart's default); the optimizer Jobs check storage with the tenant's Secret."""
    for objs in (kustomize(ROOT / "manifests/base"), kustomize(ROOT / "manifests/overlays/example")):
        for role in (o for o in objs if o["kind"] in ("ClusterRole", "Role")):
            for rule in role["rules"]:
                assert "secrets" not in rule.get("resources", []), rule
                assert "*" not in rule.get("resources", []) and "*" not in rule["verbs"], rule


def _values_of(app_source: dict) -> dict:
    return app_source.get("helm", {}).get("valuesObject", {})


def test_argocd_application_values_render_with_the_chart(tmp_path):
    apps = [d for d in yaml.safe_load_all((ROOT / "manifests/argocd/application.yaml").read_text()) if d]
    operator = next(a for a in apps if a["spec"]["source"].get("path") == "charts/modeldeploy")
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(_values_of(operator["spec"]["source"])))
    objs = helm_template("-f", str(values))       # values.schema.json validates them
    assert find(objs, "Deployment")["spec"]["replicas"] == operator["spec"]["source"]["helm"]["valuesObject"][
        "replicaCount"]
    models = next(a for a in apps if a["spec"]["source"].get("path") == "examples")
    include = models["spec"]["source"]["directory"]["include"]
    assert (ROOT / "examples" / include).exists(), f"the models Application includes a missing file {include}"


def test_flux_helmrelease_points_at_the_chart(tmp_path):
    objs = kustomize(ROOT / "manifests/flux")
    release = find(objs, "HelmRelease")
    assert (ROOT / release["spec"]["chart"]["spec"]["chart"]).joinpath("Chart.yaml").exists()
    source = find(objs, "GitRepository")
    assert release["spec"]["chart"]["spec"]["sourceRef"] == {"kind": "GitRepository",
                                                             "name": source["metadata"]["name"]}
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(release["spec"]["values"]))
    helm_template("-f", str(values))
    models = find(objs, "Kustomization", "models")
    assert (ROOT / models["spec"]["path"]).joinpath("kustomization.yaml").exists()


def grants(roles: list[dict]) -> set[tuple[str, str, str]]:
    """(API group, resource, verb) every rule of these roles grants."""
    return {(g, r, v) for role in roles for rule in role["rules"] for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]}


def test_the_kustomize_manifests_grant_what_the_chart_grants_cluster_wide():
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests" / "base" / "rbac.yaml").read_text()) if d]
    role = next(d for d in docs if d["kind"] == "ClusterRole" and any(
        "deployments" in r["resources"] for r in d["rules"]))
    chart = next(d for d in chart_rbac([CHART_NAMESPACE]) if d["kind"] == "Role")
    writes = {"create", "patch", "update", "delete", "deletecollection"}
    base, chart = grants([role]), grants([chart])
    assert base >= chart
    assert {c for c in base if c[2] in writes} == {c for c in chart if c[2] in writes}
