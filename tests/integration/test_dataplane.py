"""The data plane for real: the operator's serving pods on a runner node (hack/podrunner.py) run the `modeldeploy
pull` init container against S3 and the TF Serving stand-in (hack/tfserving/) with exactly the flags and
configuration files the operator renders; Ready comes from the real probes, predictions come from the SavedModel, and the
monitor's model-status probe reads TF Serving's own answer.

The model is the tiny SavedModel of tests/fixtures/dataplane.py; the expected probabilities are computed there
with numpy.
"""
from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import pathlib
import time

import numpy as np
import pytest

from tests.fixtures.cluster import wait_for
from tests.fixtures.dataplane import CHECKS, REST, annotate_faults, expected, http, plain, pod_ready, serving_pods
from tests.fixtures.operator import apply_md, condition, get_md, is_ready, wait_md

pytestmark = [pytest.mark.cluster, pytest.mark.tf, pytest.mark.s3]
REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_saved_model_served_as_is_answers_on_every_pod_with_batching_and_metrics(kubectl, namespace, operator,
                                                                                 models):
    apply_md(kubectl, namespace, plain("plain", models["good"], serving={
        "replicas": 2, "batching": {"maxBatchSize": 8, "batchTimeoutMicros": 50000, "numBatchThreads": 1}}))
    md = wait_md(kubectl, namespace, "plain", is_ready, 400, "Ready from the real probes")
    assert md["status"]["serving"]["readyReplicas"] == 2
    pods = serving_pods(kubectl, namespace, "plain")
    assert len(pods) == 2 and all(pod_ready(p) and p["spec"]["nodeName"] == "run-cpu-0" for p in pods)
    x = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    for pod in pods:
        ip = pod["status"]["podIP"]
        assert ipaddress.ip_address(ip).is_loopback and ip != "127.0.0.1", ip
        base = f"http://{ip}:{REST}/v1/models/plain"
        code, status = http(base)
        assert code == 200 and status["model_version_status"] == [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}], status
        code, rows = http(base + ":predict", {"instances": x.tolist()})
        assert code == 200, rows
        np.testing.assert_allclose(rows["predictions"], expected(x), rtol=1e-5, atol=1e-6)
        code, cols = http(base + ":predict", {"inputs": {"x": x.tolist()}})
        assert code == 200, cols
        np.testing.assert_allclose(cols["outputs"], expected(x), rtol=1e-5, atol=1e-6)
        code, err = http(base + ":predict", {"instances": [[1.0, 2.0]]})       # wrong shape: TF Serving's error
        assert code == 400 and "error" in err, (code, err)
        # The init container pulled the model as it is (no _COMPLETE marker needed) and exited 0.
        (pull,) = pod["status"]["initContainerStatuses"]
        assert pull["state"]["terminated"]["exitCode"] == 0, pull

    # Server-side batching: concurrent one-row requests to one pod are answered from shared batches.
    base = f"http://{pods[0]['status']['podIP']}:{REST}"
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: http(f"{base}/v1/models/plain:predict", {"instances": [x[i % 5].tolist()]}),
                                range(32)))
    assert all(code == 200 for code, _ in answers), answers[:3]
    for i, (_, body) in enumerate(answers):
        np.testing.assert_allclose(body["predictions"], expected(x[i % 5:i % 5 + 1]), rtol=1e-5, atol=1e-6)
    code, metrics = http(f"{base}/monitoring/prometheus/metrics")
    assert code == 200 and ':tensorflow:serving:request_count{' in metrics, metrics[:500]
    batch_sizes = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith(":tensorflow:serving:batching_session:processed_batch_size_sum")]
    batches = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith(":tensorflow:serving:batching_session:processed_batch_size_count")]
    assert batches and sum(batch_sizes) > sum(batches), (batch_sizes, batches)   # some batch held > 1 request

    # Prometheus off (a new pod template): the path answers 404, as TF Serving does without the config.
    apply_md(kubectl, namespace, plain("plain", models["good"], serving={"replicas": 1},
                                       monitoring={**CHECKS["monitoring"], "prometheus": False}))
    wait_md(kubectl, namespace, "plain", lambda o: is_ready(o) and all(
        p["metadata"]["annotations"].get("prometheus.io/scrape") is None
        for p in serving_pods(kubectl, namespace, "plain")), 400, "the pods without Prometheus Ready")
    pod = next(p for p in serving_pods(kubectl, namespace, "plain") if pod_ready(p))
    code, _ = http(f"http://{pod['status']['podIP']}:{REST}/monitoring/prometheus/metrics")
    assert code == 404


@pytest.mark.timeout(600)
def test_a_version_that_fails_to_load_rolls_back_within_one_retry_window(kubectl, namespace, operator, models):
    apply_md(kubectl, namespace, plain("load", models["good"]))
    wait_md(kubectl, namespace, "load", is_ready, 400, "version 1 Ready")
    started = time.monotonic()
    apply_md(kubectl, namespace, plain("load", models["broken"], version=2))
    md = wait_md(kubectl, namespace, "load", lambda o: condition(o, "Stalled").get("reason") == "RolledBack"
                 and is_ready(o), 400, "the rollback to version 1")
    print(f"version 2 rolled back {time.monotonic() - started:.0f}s after it was applied")
    assert md["status"]["model"]["servingVersion"] == 1 and md["status"]["model"]["failedVersion"] == 2
    message = condition(md, "Stalled")["message"]
    assert "version 2" in message and "rolled back to version 1" in message, message
    # The new pods' server really failed: TF Serving's start-up error, exit 255, then restarts.
    logs = "".join(p.read_text(errors="replace") for p in (REPO / ".cluster" / "pods").glob(
        f"{namespace}_load-*/tf-serving.log"))
    assert "Failed to start server" in logs, logs[-2000:]


@pytest.mark.timeout(600)
def test_slow_load_holds_the_startup_probe_and_a_crash_after_start_restarts(kubectl, namespace, operator, models):
    annotate_faults(kubectl, namespace, "slow-load=30,crash-after=20")
    apply_md(kubectl, namespace, plain("slow", models["good"]))
    pod = wait_for(lambda: next(iter(serving_pods(kubectl, namespace, "slow")), None), 60, "the serving pod")
    name = pod["metadata"]["name"]

    def serving_status():
        pods = [p for p in serving_pods(kubectl, namespace, "slow") if p["metadata"]["name"] == name]
        return next((c for c in pods[0]["status"].get("containerStatuses") or [] if c["name"] == "tf-serving"), {}) \
            if pods else {}
    # Running but not started while the model loads: the startup probe holds readiness and liveness back. Every
    # status read from the container's start until the startup probe passes is kept: none may be ready or
    # restarted (a liveness probe let loose on a loading server kills it), and when it passes the model has
    # loaded (TF Serving answers AVAILABLE), so the probe waited for the load rather than the load being short.
    wait_for(lambda: "running" in serving_status().get("state", {}), 120, "tf-serving running")
    held = []

    def started() -> dict | None:
        status = serving_status()
        if status.get("started") is True:
            return status
        held.append(status)
        return None
    status = wait_for(started, 300, "the startup probe to pass once the slow load (30 s) finished")
    assert held, "the container was started at once: no startup probe held it while the model loaded"
    assert all(s["ready"] is False and s["restartCount"] == 0 for s in held), held[-1]
    assert status["restartCount"] == 0, status
    ip = next(p for p in serving_pods(kubectl, namespace, "slow") if p["metadata"]["name"] == name)["status"]["podIP"]
    code, model = http(f"http://{ip}:{REST}/v1/models/slow")
    assert code == 200 and model["model_version_status"][0]["state"] == "AVAILABLE", (code, model)
    wait_md(kubectl, namespace, "slow", is_ready, 300, "Ready once the slow load finished")
    # crash-after: the server exits 20 s after its model became AVAILABLE; the container restarts.
    wait_for(lambda: serving_status().get("restartCount", 0) >= 1, 180, "tf-serving restarted after its crash")
    last = serving_status()["lastState"]["terminated"]
    assert last["exitCode"] == 1, last
    md = wait_md(kubectl, namespace, "slow", lambda o: is_ready(o) or condition(o, "Degraded").get("status") == "True",
                 120, "the restart to be seen")
    assert md["status"]["model"]["servingVersion"] == 1


@pytest.mark.timeout(600)
def test_a_version_turning_end_is_degraded_with_tf_servings_message_and_rolls_back(kubectl, namespace, operator,
                                                                                  models):
    annotate_faults(kubectl, namespace, "end-after=1@2")      # AVAILABLE, then END before it counts as good
    apply_md(kubectl, namespace, plain("ends", models["good"]))
    wait_md(kubectl, namespace, "ends", is_ready, 400, "version 1 Ready")
    apply_md(kubectl, namespace, plain("ends", models["good"], version=2))
    md = wait_md(kubectl, namespace, "ends", lambda o: condition(o, "Stalled").get("reason") == "RolledBack"
                 and is_ready(o), 400, "the rollback after version 2 turned END")
    assert md["status"]["model"]["servingVersion"] == 1 and md["status"]["model"]["failedVersion"] == 2
    message = condition(md, "Stalled")["message"]
    # TF Serving's own state and message for the version, as its model-status API gave them.
    assert "ModelNotAvailable" in message and "model END" in message and "failed and was unloaded" in message, message


@pytest.mark.timeout(300)
def test_a_uri_naming_the_storage_secret_reaches_the_pull_literally_never_expanded(kubectl, namespace, operator,
                                                                                 models, s3):
    """s3://.../$(AWS_SECRET_ACCESS_KEY): the kubelet would expand it from the init container's environment (the
    storage Secret arrives by envFrom); the operator escapes it, so the pull asks for the literal key, fails
    NotFound, and the secret appears nowhere: not in the process's argv (its log), status or Events."""
    secret = s3.env["AWS_SECRET_ACCESS_KEY"]
    uri = models["good"].rsplit("/", 1)[0] + "/$(AWS_SECRET_ACCESS_KEY)"
    apply_md(kubectl, namespace, plain("leak", uri))
    def pull_failed(o):
        return next((c["message"] for c in (o.get("status") or {}).get("conditions", [])
                     if "pull-model exited 5" in c.get("message", "")), None)     # 5: NotFound
    md = wait_md(kubectl, namespace, "leak", pull_failed, 180, "the init container's NotFound in a condition")
    assert secret not in pull_failed(md)
    dep = json.loads(kubectl("get", "deployment", "leak", "-o", "json", namespace=namespace).stdout)
    assert dep["spec"]["template"]["spec"]["initContainers"][0]["args"][0].endswith("/$$(AWS_SECRET_ACCESS_KEY)")
    logs = "".join(p.read_text(errors="replace") for p in (REPO / ".cluster" / "pods").glob(
        f"{namespace}_leak-*/pull-model.log"))
    assert "$(AWS_SECRET_ACCESS_KEY)" in logs and secret not in logs, logs[-2000:]
    events = kubectl("get", "events", "-o", "json", namespace=namespace).stdout
    status = json.dumps(get_md(kubectl, namespace, "leak")["status"])
    assert secret not in events and secret not in status
