"""Operator metrics (modeldeploy.controller.metrics): values read back from the registry and the text format."""
from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modeldeploy.controller import metrics as m

REG = m.REGISTRY


def value(metric, /, **labels):
    return REG.get_sample_value(metric, labels or None)


def test_reconcile_counts_and_durations():
    ok0 = value("modeldeploy_reconcile_total", result="success") or 0
    err0 = value("modeldeploy_reconcile_total", result="error") or 0
    errors0 = value("modeldeploy_reconcile_errors_total") or 0
    count0 = value("modeldeploy_reconcile_duration_seconds_count") or 0
    m.observe_reconcile(0.2, error=False)
    m.observe_reconcile(1.5, error=True)
    with m.reconcile_timer():
        pass
    with pytest.raises(RuntimeError):
        with m.reconcile_timer():
            raise RuntimeError("apply failed")
    assert value("modeldeploy_reconcile_total", result="success") == ok0 + 2
    assert value("modeldeploy_reconcile_total", result="error") == err0 + 2
    assert value("modeldeploy_reconcile_errors_total") == errors0 + 2
    assert value("modeldeploy_reconcile_duration_seconds_count") == count0 + 4
    assert m.seconds_since_last_reconcile() is not None and m.seconds_since_last_reconcile() >= 0


def test_optimization_duration_ignores_nonsense():
    count0 = value("modeldeploy_optimization_duration_seconds_count") or 0
    sum0 = value("modeldeploy_optimization_duration_seconds_sum") or 0
    m.observe_optimization(95.0)
    for bad in (None, -1, float("nan"), "abc"):
        m.observe_optimization(bad)
    assert value("modeldeploy_optimization_duration_seconds_count") == count0 + 1
    assert value("modeldeploy_optimization_duration_seconds_sum") == pytest.approx(sum0 + 95.0)
    assert value("modeldeploy_optimization_duration_seconds_bucket", le="120.0") >= 1


def test_health_is_one_hot():
    m.set_health("ns-h", "a", "Degraded")
    m.set_health("ns-h", "a", "Healthy")
    got = {s: value("modeldeploy_model_health", namespace="ns-h", name="a", state=s) for s in m.HEALTH_STATES}
    assert got == {"Healthy": 1, "Progressing": 0, "Degraded": 0, "Suspended": 0, "Unknown": 0}
    m.set_health("ns-h", "a", "Exploded")        # not a state: recorded as Unknown, never raises
    assert value("modeldeploy_model_health", namespace="ns-h", name="a", state="Unknown") == 1


def test_figures_rollbacks_and_forget():
    m.set_model_figures("ns-f", "a", compression_ratio=3.8, accuracy_drop=0.004)
    m.set_model_figures("ns-f", "a", compression_ratio=None, accuracy_drop=float("inf"))   # leaves both
    m.set_serving_version("ns-f", "a", 3)
    m.inc_rollback("ns-f", "a")
    m.inc_rollback("ns-f", "a")
    m.set_health("ns-f", "a", "Degraded")
    assert value("modeldeploy_model_compression_ratio", namespace="ns-f", name="a") == 3.8
    assert value("modeldeploy_model_accuracy_drop", namespace="ns-f", name="a") == 0.004
    assert value("modeldeploy_model_serving_version", namespace="ns-f", name="a") == 3
    assert value("modeldeploy_rollbacks_total", namespace="ns-f", name="a") == 2
    m.forget_model("ns-f", "a")
    m.forget_model("ns-f", "a")                   # twice, or for a model never seen: no error
    text = generate_latest(REG).decode()
    assert 'namespace="ns-f"' not in text


def _md(status, generation=2):
    return {"metadata": {"namespace": "ns-o", "name": "digits", "generation": generation}, "status": status}


def test_observe_model_reads_the_status_contract():
    ready = {"type": "Ready", "status": "True", "reason": "ReplicasReady", "message": "2/2",
             "observedGeneration": 2, "lastTransitionTime": "2025-01-01T00:00:00Z"}
    m.observe_model(_md({"observedGeneration": 2, "conditions": [ready],
                         "model": {"servingVersion": 4, "lastGoodVersion": 3},
                         "optimization": {"compressionRatio": 4.1, "accuracyDrop": 0.002}}))
    assert value("modeldeploy_model_compression_ratio", namespace="ns-o", name="digits") == 4.1
    assert value("modeldeploy_model_accuracy_drop", namespace="ns-o", name="digits") == 0.002
    assert value("modeldeploy_model_serving_version", namespace="ns-o", name="digits") == 4
    assert value("modeldeploy_model_health", namespace="ns-o", name="digits", state="Healthy") == 1
    # A spec change the operator has not observed yet is Progressing, whatever the old conditions say.
    m.observe_model(_md({"observedGeneration": 2, "conditions": [ready]}, generation=3))
    assert value("modeldeploy_model_health", namespace="ns-o", name="digits", state="Progressing") == 1
    m.observe_model({"metadata": None, "status": "garbage"})      # never raises


def test_exposition_parses_with_prometheus_parser():
    m.observe_reconcile(0.01, error=False)
    m.set_health("ns-p", "a", "Healthy")
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(REG).decode())}
    for name, kind in [("modeldeploy_reconcile", "counter"), ("modeldeploy_reconcile_errors", "counter"),
                       ("modeldeploy_reconcile_duration_seconds", "histogram"),
                       ("modeldeploy_optimization_duration_seconds", "histogram"),
                       ("modeldeploy_model_compression_ratio", "gauge"), ("modeldeploy_model_accuracy_drop", "gauge"),
                       ("modeldeploy_model_health", "gauge"), ("modeldeploy_model_serving_version", "gauge"),
                       ("modeldeploy_rollbacks", "counter"), ("process_resident_memory_bytes", "gauge")]:
        assert families[name].type == kind, name


def test_the_tests_reconcile_count_reads_the_operators_exposition():
    """tests/fixtures/operator.reconcile_count (what integration tests wait on instead of sleeping) counts the
    successful reconciles of this very exposition, not the failed ones."""
    from tests.fixtures.operator import reconcile_count
    before = reconcile_count(generate_latest(REG).decode())
    m.observe_reconcile(0.01, False)
    m.observe_reconcile(0.01, False)
    m.observe_reconcile(0.01, True)
    assert reconcile_count(generate_latest(REG).decode()) == before + 2
    assert reconcile_count("") == 0
