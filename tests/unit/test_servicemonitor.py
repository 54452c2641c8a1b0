"""The ServiceMonitor builder: whole-object expectations, and that it really selects the serving Service's port."""
from __future__ import annotations

import pytest

from modeldeploy.api import spec as specmod
from modeldeploy.resources import config
from modeldeploy.resources.service import build_service
from modeldeploy.resources.servicemonitor import build_servicemonitor

LABELS = {"app.kubernetes.io/name": "modeldeploy", "app.kubernetes.io/instance": "digits",
          "app.kubernetes.io/component": "serving", "app.kubernetes.io/managed-by": "modeldeploy"}
SELECTOR = {k: LABELS[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                                   "app.kubernetes.io/component")}


def md(monitoring=None, name="digits", namespace="ml"):
    spec = {"model": {"uri": "s3://models/digits/base", "version": 3}}
    if monitoring is not None:
        spec["monitoring"] = monitoring
    return specmod.parse({"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
                          "metadata": {"name": name, "namespace": namespace}, "spec": spec})


def expected(interval="30s"):
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "digits", "namespace": "ml", "labels": LABELS},
        "spec": {
            "selector": {"matchLabels": SELECTOR},
            "namespaceSelector": {"matchNames": ["ml"]},
            "endpoints": [{"port": "http", "path": "/monitoring/prometheus/metrics", "scheme": "http",
                           "interval": interval}],
            "targetLabels": ["app.kubernetes.io/instance"],
        },
    }


@pytest.mark.parametrize("monitoring, want", [
    (None, expected()),
    ({"intervalSeconds": 15}, expected("15s")),
    ({"prometheus": True, "intervalSeconds": 120}, expected("120s")),
    ({"prometheus": False}, None),
], ids=["defaults", "interval", "explicit", "off"])
def test_build_servicemonitor(monitoring, want):
    assert build_servicemonitor(md(monitoring)) == want


def test_selects_the_serving_service_rest_port():
    spec = md()
    sm, svc = build_servicemonitor(spec), build_service(spec)
    labels = svc["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    port = next(p for p in svc["spec"]["ports"] if p["name"] == sm["spec"]["endpoints"][0]["port"])
    assert port["port"] == 8501
    assert sm["spec"]["endpoints"][0]["path"] == config.PROMETHEUS_PATH
    # ...and TF Serving is told to serve that path (no 404 from a missing monitoring config).
    assert config.PROMETHEUS_PATH in config.monitoring_config(spec)


def test_other_models_are_not_selected():
    mine, other = build_servicemonitor(md(name="a")), build_service(md(name="b"))
    labels = other["metadata"]["labels"]
    assert not all(labels.get(k) == v for k, v in mine["spec"]["selector"]["matchLabels"].items())


def test_pure():
    spec = md()
    first = build_servicemonitor(spec)
    first["spec"]["endpoints"][0]["port"] = "changed"
    assert build_servicemonitor(spec) == expected()
