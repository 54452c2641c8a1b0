"""Scrape the metrics endpoint over HTTP and parse it with prometheus_client's parser; the liveness probe's
discovery check against the real API server.

The operator-run scrape (metrics and /healthz of a running `modeldeploy run`) lives in
tests/integration/test_observability_scenarios.py, which uses the operator fixture.
"""
from __future__ import annotations

import pathlib
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modeldeploy.api import crd
from modeldeploy.controller import metrics, probes
from tests.fixtures.cluster import wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server():
    srv, thread = metrics.start_metrics_server(0, "127.0.0.1")
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)


def scrape(url: str) -> tuple[str, dict]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        content_type = resp.headers["Content-Type"]
        text = resp.read().decode()
    assert content_type.startswith("text/plain"), content_type
    return text, {f.name: f for f in text_string_to_metric_families(text)}


def samples(families: dict, family: str, **labels) -> list:
    return [s for s in families[family].samples if all(s.labels.get(k) == v for k, v in labels.items())]


def test_scrape_parses_and_carries_our_series(server):
    metrics.observe_reconcile(0.05, error=False)
    metrics.observe_reconcile(0.2, error=True)
    metrics.observe_optimization(42.0)
    metrics.observe_model({
        "metadata": {"namespace": "scrape-ns", "name": "digits", "generation": 1},
        "status": {"observedGeneration": 1,
                   "conditions": [{"type": "Ready", "status": "True", "reason": "ReplicasReady", "message": "1/1",
                                   "observedGeneration": 1, "lastTransitionTime": "2025-01-01T00:00:00Z"}],
                   "model": {"servingVersion": 2}, "optimization": {"compressionRatio": 3.5, "accuracyDrop": 0.01}}})
    metrics.inc_rollback("scrape-ns", "digits")

    text, families = scrape(server + "/metrics")
    model = {"namespace": "scrape-ns", "name": "digits"}
    assert samples(families, "modeldeploy_model_compression_ratio", **model)[0].value == 3.5
    assert samples(families, "modeldeploy_model_accuracy_drop", **model)[0].value == 0.01
    assert samples(families, "modeldeploy_model_serving_version", **model)[0].value == 2
    assert samples(families, "modeldeploy_model_health", state="Healthy", **model)[0].value == 1
    assert samples(families, "modeldeploy_rollbacks", **model)[0].value >= 1
    assert samples(families, "modeldeploy_reconcile", result="error")[0].value >= 1
    assert any(s.name.endswith("_count") and s.value >= 1
               for s in families["modeldeploy_optimization_duration_seconds"].samples)
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    # Every path serves the same registry (Prometheus configs often omit /metrics).
    assert scrape(server + "/")[1].keys() == families.keys()

    metrics.forget_model("scrape-ns", "digits")
    _, families = scrape(server + "/metrics")
    assert samples(families, "modeldeploy_model_health", **model) == []


@pytest.mark.cluster
def test_apiserver_probe_against_the_cluster(cluster, kubectl):
    from kubernetes import config as kconfig

    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / crd.CRD_FILE))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd.CRD_NAME}")

    def factory():
        return kconfig.new_client_from_config(config_file=cluster.kubeconfig)

    result = wait_for(lambda: probes.apiserver_probe(factory).get("ok") and probes.apiserver_probe(factory),
                      30, "the apiserver probe to pass")
    assert result["groupVersion"] == "modeldeploy.io/v1alpha1" and result["resources"] >= 1
