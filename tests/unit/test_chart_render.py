"""The Helm chart rendered with `helm template` and linted with `helm lint` (the pinned helm, tests/tools.py): the
schema, and the rendering decisions. No cluster: installs and upgrades are in tests/integration/test_chart.py.
"""
from __future__ import annotations

import pytest

from tests.chart import (CHART, VARIANTS, env_of, helm, of_kind, one, operator_container, render, rules_of,
                         sets)


# ---------------------------------------------------------------------------------------------------------------
# Lint and schema (helm only, no cluster)

@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint(variant):
    helm("lint", "--strict", str(CHART), *sets(VARIANTS[variant]))


# (values, text the error must contain: the path of the bad value)
BAD_VALUES = [
    ({"replicaCount": "two"}, "/replicaCount"),
    ({"replicaCount": 0}, "/replicaCount"),
    ({"watchNamespaces": "team-a"}, "/watchNamespaces"),
    ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
    ({"images.operator.digest": "abc123"}, "/images/operator/digest"),
    ({"images.optimizer.repository": ""}, "/images/optimizer/repository"),
    ({"images.serving.tag": 2.21}, "/images/serving/tag"),
    ({"images.pullPolicy": "Sometimes"}, "/images/pullPolicy"),
    ({"logFormat": "xml"}, "/logFormat"),
    ({"logLevel": "LOUD"}, "/logLevel"),
    ({"metrics.port": 70000}, "/metrics/port"),
    ({"metrics.serviceMonitor.interval": "often"}, "/metrics/serviceMonitor/interval"),
    ({"probes.liveness.periodSeconds": 0}, "/probes/liveness/periodSeconds"),
    ({"rbac.readSecret": True}, "/rbac"),                       # a typo: unknown keys are errors
    ({"resources": "small"}, "/resources"),
    ({"tolerations": {"key": "x"}}, "/tolerations"),
    ({"nodeSelector": {"gpu": True}}, "/nodeSelector/gpu"),
    ({"peering.enabled": "yes"}, "/peering/enabled"),
    ({"podDisruptionBudget.maxUnavailable": "half"}, "/podDisruptionBudget/maxUnavailable"),
    ({"extraArgs": "--verbose"}, "/extraArgs"),
]


@pytest.mark.parametrize("values,path", BAD_VALUES, ids=[p for _, p in BAD_VALUES])
def test_schema_rejects_bad_values(values, path):
    for command in (["template", "x"], ["lint"]):
        proc = helm(*command, str(CHART), *sets(values), check=False)
        assert proc.returncode != 0, f"helm {command[0]} accepted {values}"
        message = proc.stdout + proc.stderr
        assert path in message, f"helm {command[0]}'s error does not name {path}:\n{message}"


def test_service_account_name_required_when_not_created():
    proc = helm("template", "x", str(CHART), *sets({"serviceAccount.create": False}), check=False)
    assert proc.returncode != 0 and "serviceAccount.name is required" in proc.stderr


# ---------------------------------------------------------------------------------------------------------------
# Rendering decisions

def test_default_rbac_is_cluster_wide_and_least_privilege():
    objs = render()
    assert not of_kind(objs, "Role")
    rules = rules_of(one(objs, "ClusterRole"))
    assert ("modeldeploy.io", "modeldeployments", "watch") in rules
    assert ("modeldeploy.io", "modeldeployments/status", "patch") in rules
    assert ("apiextensions.k8s.io", "customresourcedefinitions", "list") in rules
    for group, resource, verb in rules:
        assert "*" not in (group, resource, verb)
        assert not (resource == "secrets" and verb != "get"), "Secrets: get only, never list or watch"
        assert not (resource == "namespaces"), "cluster-wide Kopf does not list namespaces"
        assert not (group == "apiextensions.k8s.io" and verb not in ("get", "list", "watch"))
        assert not (resource == "pods" and verb not in ("get", "list", "watch"))
    assert not any(g == "kopf.dev" for g, _, _ in rules), "no peering rights without peering"
    binding = one(objs, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": one(objs, "ServiceAccount")["metadata"][
        "name"], "namespace": "modeldeploy-system"}]


def test_no_secret_access_by_default_and_get_only_when_asked():
    objs = render()
    assert not any(r == "secrets" for _, r, _ in rules_of(one(objs, "ClusterRole")))
    env = {e["name"]: e.get("value") for e in one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELDEPLOY_READ_SECRETS"] == "0"
    objs = render({"rbac.readSecrets": True})
    assert {(g, r, v) for g, r, v in rules_of(one(objs, "ClusterRole")) if r == "secrets"} == {("", "secrets", "get")}
    env = {e["name"]: e.get("value") for e in one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELDEPLOY_READ_SECRETS"] == "1"


def test_watch_namespaces_uses_roles():
    objs = render({"watchNamespaces": ["team-a", "team-b"]})
    roles = of_kind(objs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in of_kind(objs, "RoleBinding")) == ["team-a", "team-b"]
    cluster_rules = rules_of(one(objs, "ClusterRole"))
    assert {r for _, r, _ in cluster_rules} == {"customresourcedefinitions", "namespaces"}
    assert all(v in ("get", "list", "watch") for _, _, v in cluster_rules)
    for role in roles:
        assert ("modeldeploy.io", "modeldeployments", "watch") in rules_of(role)
    args = operator_container(objs)["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args and "--all-namespaces" not in args


def test_one_replica_is_standalone():
    objs = render()
    deploy = one(objs, "Deployment")
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"]["type"] == "Recreate"
    assert "--standalone" in operator_container(objs)["args"]
    assert not of_kind(objs, "PodDisruptionBudget") and not of_kind(objs, "ClusterKopfPeering")


@pytest.mark.parametrize("namespaces", [[], ["team-a", "team-b"]])
def test_replicas_use_peering(namespaces):
    objs = render({"replicaCount": 2, "watchNamespaces": namespaces}, release="prod")
    deploy = one(objs, "Deployment")
    assert deploy["spec"]["strategy"] == {"type": "RollingUpdate",
                                          "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    args = operator_container(objs)["args"]
    assert "--peering=prod-modeldeploy" in args and "--standalone" not in args
    pdb = one(objs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    if namespaces:
        peerings = of_kind(objs, "KopfPeering")
        assert sorted(p["metadata"]["namespace"] for p in peerings) == namespaces
        assert all(("kopf.dev", "kopfpeerings", "patch") in rules_of(r) for r in of_kind(objs, "Role"))
    else:
        assert one(objs, "ClusterKopfPeering")["metadata"]["name"] == "prod-modeldeploy"
        assert ("kopf.dev", "clusterkopfpeerings", "patch") in rules_of(one(objs, "ClusterRole"))


def test_images_reach_the_operator():
    digest = "sha256:" + "b" * 64
    objs = render({"images.operator": {"repository": "reg.example/md/operator", "tag": "1.2.3", "digest": digest},
                   "images.optimizer.repository": "reg.example/md/optimizer",
                   "images.serving.repository": "mirror.example/tensorflow/serving",
                   "images.servingGpu.digest": "sha256:" + "c" * 64})
    c = operator_container(objs)
    env = env_of(c)
    assert c["image"] == f"reg.example/md/operator:1.2.3@{digest}"
    assert env["MODELDEPLOY_PULL_IMAGE"]["value"] == c["image"]
    assert env["MODELDEPLOY_OPTIMIZER_IMAGE"]["value"] == "reg.example/md/optimizer:0.1.0"
    assert env["MODELDEPLOY_SERVING_IMAGE"]["value"] == "mirror.example/tensorflow/serving:2.21.0"
    assert env["MODELDEPLOY_SERVING_IMAGE_GPU"]["value"] == "tensorflow/serving:2.21.0-gpu@sha256:" + "c" * 64


def test_probes_and_metrics_wiring():
    objs = render({"probes.port": 9091, "metrics.port": 9090, "metrics.service.port": 80})
    c = operator_container(objs)
    env = env_of(c)
    assert env["MODELDEPLOY_LIVENESS"]["value"] == "http://0.0.0.0:9091/healthz"
    assert env["MODELDEPLOY_METRICS_PORT"]["value"] == "9090"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 9090, "health": 9091}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    svc = one(objs, "Service")
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 80, "targetPort": "metrics", "protocol": "TCP"}]
    no_metrics = render({"metrics.enabled": False})
    assert not of_kind(no_metrics, "Service")
    assert env_of(operator_container(no_metrics))["MODELDEPLOY_METRICS_PORT"]["value"] == "-1"
    assert [p["name"] for p in operator_container(no_metrics)["ports"]] == ["health"]


def test_servicemonitor_and_networkpolicy():
    objs = render({"metrics.serviceMonitor.enabled": True, "metrics.serviceMonitor.labels": {"release": "prom"},
                   "networkPolicy.enabled": True,
                   "networkPolicy.metricsFrom": [{"podSelector": {"matchLabels": {"app": "prometheus"}}}]})
    sm = one(objs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics" and sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert sm["spec"]["selector"]["matchLabels"].items() <= one(objs, "Service")["metadata"]["labels"].items()
    np_ = one(objs, "NetworkPolicy")
    assert np_["spec"]["policyTypes"] == ["Ingress"]
    metrics_rule = next(r for r in np_["spec"]["ingress"] if r["ports"][0]["port"] == "metrics")
    assert metrics_rule["from"] == [{"podSelector": {"matchLabels": {"app": "prometheus"}}}]


def test_scheduling_values_reach_the_pod():
    objs = render({"nodeSelector": {"pool": "system"}, "tolerations": [{"key": "d", "operator": "Exists"}],
                   "affinity": {"nodeAffinity": {}}, "priorityClassName": "system-cluster-critical",
                   "resources": {"requests": {"cpu": "1"}}})
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "system"}
    assert pod["tolerations"] == [{"key": "d", "operator": "Exists"}]
    assert pod["affinity"] == {"nodeAffinity": {}}
    assert pod["priorityClassName"] == "system-cluster-critical"
    # Helm merges maps: the other defaults stay.
    assert pod["containers"][0]["resources"] == {"requests": {"cpu": "1", "memory": "128Mi"},
                                                 "limits": {"memory": "512Mi"}}
