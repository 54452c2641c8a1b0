"""Observability of a running operator on the local cluster: what Prometheus, Argo CD and a log reader see.

Each scenario runs the `operator` fixture (`modeldeploy run`) with JSON logs against the test's namespace and
checks, beside the conditions, that the operator's metrics endpoint parses with prometheus_client's parser and
its per-model series say the same as the object's own status (health state = the Argo CD Lua's answer, serving
version, rollbacks, optimization duration), that Events are posted on transitions, and that every log line is
JSON with the object's namespace and name and no storage secret, even at DEBUG.

The two slow failure scenarios run here once each, with every check on them (conditions and their messages,
children, Events, metrics, Argo CD health): a crash-looping new version rolled back, and a GPU request no node
can hold (tests/integration/test_operator.py has the other reconciler scenarios).

Serving pods are played by kwok (crash-looping when the image name says so); the gate scenario runs the real
optimizer Job (TensorFlow) through the cluster's Job runner.
"""
from __future__ import annotations

import io
import json
import re
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.argo_health import lua_health
from tests.fixtures.cluster import wait_for
from tests.fixtures.operator import (Operator, apply_md, condition, events, get, get_md, is_ready, md_body,
                                     wait_md)

pytestmark = [pytest.mark.cluster, pytest.mark.operator_env(MODELDEPLOY_LOG_FORMAT="json")]

# One GPU per replica (the most TF Serving uses) but more CPU than any node has: never schedulable.
HUGE = {"gpus": 1, "resources": {"requests": {"cpu": "100"}}}
FAST = {"monitoring": {"intervalSeconds": 5, "failureThreshold": 2}, "rollout": {"progressDeadlineSeconds": 30}}
CRASHLOOP_IMAGE = "tensorflow/serving:2.21.0-crashloop"


@pytest.fixture
def op(operator, namespace, s3):
    """The `operator` fixture's process, with JSON logs at DEBUG (this module's operator_env mark); stopped after
    the test and every line of its log checked (the fixture then checks it for RBAC refusals)."""
    yield operator
    operator.stop()
    check_logs(operator, namespace, s3)


def families(op: Operator) -> dict:
    """A scrape of the operator, parsed by prometheus_client's own parser (raises on malformed text)."""
    return {f.name: f for f in text_string_to_metric_families(op.metrics())}


def value(fams: dict, sample: str, **labels) -> float | None:
    """The value of a sample (a counter may be named with or without _total), None when absent."""
    for fam in fams.values():
        for s in fam.samples:
            if s.name in (sample, sample + "_total") and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def health_metric(fams: dict, namespace: str, name: str) -> str | None:
    """The state whose modeldeploy_model_health series is 1 (None when the model has no series)."""
    on = [s.labels["state"] for s in fams.get("modeldeploy_model_health", ()).samples
          if s.labels.get("namespace") == namespace and s.labels.get("name") == name and s.value == 1] \
        if "modeldeploy_model_health" in fams else []
    assert len(on) <= 1, f"more than one health state at 1: {on}"
    return on[0] if on else None


def wait_health(op, kubectl, namespace, name, want: str, timeout: float) -> tuple[dict, dict]:
    """Until the Argo CD Lua and the operator's health metric both say `want` about the live object."""
    seen = []

    def agree():
        obj = get_md(kubectl, namespace, name)           # kstatus-checked and recorded
        fams = families(op)
        lua, metric = lua_health(obj)[0], health_metric(fams, namespace, name)
        seen.append((lua, metric))
        return (obj, fams) if lua == metric == want else None
    return wait_for(agree, timeout, f"Argo CD health and modeldeploy_model_health to be {want} (seen {seen[-3:]})")


def check_logs(op: Operator, namespace: str, s3) -> None:
    """Every operator line is JSON; lines about objects name them; no storage credential appears anywhere."""
    text = op.logs()
    # (The local access key id is "modeldeploy", the project's name: only the secret key can be looked for.)
    assert s3.secret_key not in text, "the storage secret key reached the log"
    records = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("====="):        # the fixture's start markers
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"a log line is not JSON: {line[:300]}")
    assert records, "the operator logged nothing"
    assert all({"time", "level", "logger", "message", "namespace", "name"} <= r.keys() for r in records)
    about_ours = [r for r in records if r["namespace"] == namespace]
    assert about_ours and all(r["name"] for r in about_ours), "no line names the test's objects"
    # Kopf's per-object lines (handler runs, retries) carry the object too.
    assert all(r["namespace"] and r["name"] for r in records if r["logger"] == "kopf.objects")


def test_endpoints_and_metrics_of_a_healthy_model(kubectl, namespace, op):
    # Liveness/readiness: Kopf's endpoint answers with our probes' results.
    with urllib.request.urlopen(f"http://127.0.0.1:{op.liveness_port}/healthz", timeout=10) as r:
        probes = json.loads(r.read())
    assert probes["apiserver"]["ok"] is True and "secondsSinceLastReconcile" in probes["reconciles"]

    apply_md(kubectl, namespace, md_body("obs", **FAST))
    wait_md(kubectl, namespace, "obs", is_ready, 60, "Ready")
    obj, fams = wait_health(op, kubectl, namespace, "obs", "Healthy", 30)
    assert value(fams, "modeldeploy_model_serving_version", namespace=namespace, name="obs") == \
        obj["status"]["model"]["servingVersion"] == 1
    assert value(fams, "modeldeploy_reconcile", result="success") >= 1
    assert value(fams, "modeldeploy_reconcile_duration_seconds_count") >= 1
    assert value(fams, "process_resident_memory_bytes") > 0
    reasons = [e["reason"] for e in events(kubectl, namespace, "obs")]
    assert "RolloutCompleted" in reasons          # with RolloutStarted before it unless both fell in one pass

    # Scaled to zero on purpose: Argo CD and the metric say Suspended, not Healthy or Progressing.
    apply_md(kubectl, namespace, md_body("obs", serving={"replicas": 0}, **FAST))
    obj, _ = wait_health(op, kubectl, namespace, "obs", "Suspended", 60)
    assert condition(obj, "Ready")["reason"] == "ScaledToZero"

    # Deleted: its series disappear (no stale gauges for a model that no longer exists).
    kubectl("delete", "modeldeployment", "obs", namespace=namespace)
    wait_for(lambda: health_metric(families(op), namespace, "obs") is None
             and value(families(op), "modeldeploy_model_serving_version", namespace=namespace, name="obs") is None,
             30, "the model's series to be dropped")


def deployment_image(kubectl, ns, name) -> str:
    dep = get(kubectl, ns, "deployment", name)
    return next(c["image"] for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "tf-serving")


@pytest.mark.timeout(480)
def test_crash_looping_new_version_is_rolled_back(kubectl, namespace, op):
    apply_md(kubectl, namespace, md_body("roll", **FAST))
    wait_md(kubectl, namespace, "roll", is_ready, 60, "version 1 Ready")
    wait_health(op, kubectl, namespace, "roll", "Healthy", 30)
    apply_md(kubectl, namespace, md_body("roll", version=2, serving={"image": CRASHLOOP_IMAGE}, **FAST))
    # While version 2 crash-loops, version 1 keeps serving; the conditions say why.
    md = wait_md(kubectl, namespace, "roll", lambda o: condition(o, "Degraded").get("reason") == "CrashLoopBackOff"
                 or condition(o, "Stalled").get("status") == "True", 60, "CrashLoopBackOff to be reported")
    if condition(md, "Stalled").get("status") != "True":
        assert condition(md, "Reconciling")["status"] == "True" and condition(md, "Available")["status"] == "True"
        assert "CrashLoopBackOff" in condition(md, "Degraded")["message"]
    # The crash loop of version 2 is Degraded for Argo CD and in the metric while version 1 still serves...
    obj, fams = wait_health(op, kubectl, namespace, "roll", "Degraded", 90)
    assert "CrashLoopBackOff" in json.dumps(obj["status"]["conditions"])
    # ...and after failureThreshold checks it is rolled back: counted once, version 1 serving again.
    md = wait_md(kubectl, namespace, "roll", lambda o: condition(o, "Stalled").get("reason") == "RolledBack"
                 and is_ready(o), 120, "the rollback to complete")
    stalled = condition(md, "Stalled")["message"]
    assert "version 2" in stalled and "rolled back to version 1" in stalled and "CrashLoopBackOff" in stalled
    assert condition(md, "Degraded")["reason"] == "RolledBack" and md["status"]["phase"] == "Failed"
    assert md["status"]["model"]["servingVersion"] == 1 and md["status"]["model"]["failedVersion"] == 2
    assert md["status"]["rollback"]["count"] == 1 and md["status"]["rollback"]["toVersion"] == 1
    assert deployment_image(kubectl, namespace, "roll") == "tensorflow/serving:2.21.0"
    dep = get(kubectl, namespace, "deployment", "roll")
    assert dep["spec"]["template"]["metadata"]["labels"]["modeldeploy.io/version"] == "1"
    fams = families(op)
    assert health_metric(fams, namespace, "roll") == lua_health(md)[0] == "Degraded"
    assert "RolledBack" in lua_health(md)[1]
    assert value(fams, "modeldeploy_rollbacks", namespace=namespace, name="roll") == 1
    assert value(fams, "modeldeploy_model_serving_version", namespace=namespace, name="roll") == 1
    assert 'modeldeploy_rollbacks_total{name="roll",namespace="%s"} 1.0' % namespace in op.metrics()
    all_events = events(kubectl, namespace, "roll")
    assert [e["reason"] for e in all_events].count("RolledBack") == 1, [e["reason"] for e in all_events]
    warnings = [e for e in all_events if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings].count("RolledBack") == 1
    assert any("CrashLoopBackOff" in e["message"] for e in warnings)
    # Not retried while the spec stays the same: two more checks, still on version 1, one rollback.
    op.wait_reconciles(2, 60, "two more checks of the rolled-back model")
    md = get_md(kubectl, namespace, "roll")
    assert md["status"]["rollback"]["count"] == 1 and deployment_image(kubectl, namespace, "roll").endswith("2.21.0")
    # A new spec (a fixed image) is tried again and becomes the last good version: Healthy again, the rollback
    # count stays.
    apply_md(kubectl, namespace, md_body("roll", version=2, **FAST))
    md = wait_md(kubectl, namespace, "roll", lambda o: is_ready(o) and o["status"]["model"].get("servingVersion") == 2,
                 90, "version 2 Ready")
    assert condition(md, "Stalled")["status"] == "False" and md["status"]["model"]["lastGoodVersion"] == 2
    _, fams = wait_health(op, kubectl, namespace, "roll", "Healthy", 30)
    assert value(fams, "modeldeploy_model_serving_version", namespace=namespace, name="roll") == 2
    assert value(fams, "modeldeploy_rollbacks", namespace=namespace, name="roll") == 1


@pytest.mark.timeout(300)
def test_unschedulable_gpu_request_reports_the_scheduler_message_then_stalls(kubectl, namespace, op):
    apply_md(kubectl, namespace, md_body("huge", serving=HUGE, **FAST))
    # While the rollout may still succeed, it is Progressing, with the scheduler's words in the conditions.
    md = wait_md(kubectl, namespace, "huge", lambda o: condition(o, "Available").get("reason") == "Unschedulable",
                 60, "Unschedulable")
    msg = condition(md, "Available")["message"]
    assert re.match(r"0/1 replicas ready: pod huge-\S+ Unschedulable: 0/\d+ nodes are available", msg), msg
    assert "Insufficient cpu" in msg
    assert condition(md, "Reconciling")["status"] == "True" and condition(md, "Ready")["status"] == "False"
    assert lua_health(md)[0] == "Progressing"
    # After progressDeadlineSeconds (30 s) the rollout failed; there is no earlier version to roll back to. It
    # needs a spec change: Stalled, and Degraded in Argo CD and in the metric.
    md = wait_md(kubectl, namespace, "huge", lambda o: condition(o, "Stalled").get("status") == "True", 90,
                 "Stalled after the progress deadline")
    assert condition(md, "Stalled")["reason"] == "ProgressDeadlineExceeded"
    assert "no earlier good version" in condition(md, "Stalled")["message"]
    assert condition(md, "Reconciling")["status"] == "False" and condition(md, "Degraded")["status"] == "True"
    obj, fams = wait_health(op, kubectl, namespace, "huge", "Degraded", 120)
    assert condition(obj, "Stalled")["status"] == "True"
    assert value(fams, "modeldeploy_rollbacks", namespace=namespace, name="huge") in (None, 0)
    assert value(fams, "modeldeploy_model_serving_version", namespace=namespace, name="huge") is None
    assert any(e["type"] == "Warning" for e in events(kubectl, namespace, "huge"))
    pods = json.loads(kubectl("get", "pods", "-o", "json", namespace=namespace).stdout)["items"]
    assert pods and all(p["spec"].get("nodeName") is None for p in pods)


@pytest.fixture
def tiny_model(s3, s3_prefix):
    """A one-layer digits classifier (.keras) and its dataset in S3: the cheapest real optimizer input."""
    import tf_keras as keras
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    y = data.target.astype(np.int64)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:1400], y[:1400], epochs=2, verbose=0)
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        model.save(f"{tmp}/tiny.keras")
        s3.client.upload_file(f"{tmp}/tiny.keras", s3.bucket, f"{s3_prefix}/base/tiny.keras")
    buf = io.BytesIO()
    np.savez(buf, x_train=x[:1400], y_train=y[:1400], x_val=x[1400:], y_val=y[1400:])
    s3.client.put_object(Bucket=s3.bucket, Key=f"{s3_prefix}/digits.npz", Body=buf.getvalue())
    return f"s3://{s3.bucket}/{s3_prefix}"


@pytest.mark.tf
@pytest.mark.s3
@pytest.mark.timeout(420)
def test_failed_gate(kubectl, namespace, op, tiny_model):
    before = value(families(op), "modeldeploy_optimization_duration_seconds_count")
    apply_md(kubectl, namespace, md_body(
        "gate", model={"uri": f"{tiny_model}/base/tiny.keras"},
        optimization={"quantization": {"mode": "dynamic"}, "dataset": {"uri": f"{tiny_model}/digits.npz"},
                      "gates": {"minCompression": 1000.0}, "outputUri": f"{tiny_model}/optimized"}, **FAST))
    # Optimizing is Progressing (never Healthy before anything serves)...
    obj = wait_md(kubectl, namespace, "gate", lambda o: condition(o, "Reconciling").get("status") == "True", 60,
                  "the optimization to start")
    assert lua_health(obj)[0] == "Progressing"
    # ...and a failed gate needs a spec change: Stalled with the gate's reason, Degraded for Argo CD and Prometheus.
    obj, fams = wait_health(op, kubectl, namespace, "gate", "Degraded", 360)
    assert condition(obj, "Stalled")["reason"] == condition(obj, "Optimized")["reason"] == "CompressionGateFailed"
    assert "minCompression" in condition(obj, "Stalled")["message"] or "1000" in condition(obj, "Stalled")["message"]
    warnings = [e["reason"] for e in events(kubectl, namespace, "gate") if e["type"] == "Warning"]
    assert warnings.count("CompressionGateFailed") == 1, warnings
    assert value(fams, "modeldeploy_optimization_duration_seconds_count") == (before or 0) + 1
    # Nothing serves: no version gauge, and no published version in storage.
    assert value(fams, "modeldeploy_model_serving_version", namespace=namespace, name="gate") is None
