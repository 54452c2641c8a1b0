"""End to end: a real digits model, the real optimizer Job (run by the Job runner), GPU serving, autoscaling.

S3 holds a small Keras CNN trained here on scikit-learn's bundled digits (nothing is downloaded). One
ModelDeployment asks for pruning 0.5 + int8 on 1 GPU with autoscaling 1..4. Along the way: the operator is
SIGKILLed while the Job runs (exactly one Job per version afterwards), `kubectl wait --for=condition=Ready`
returns, a bounded predict load makes the HPA scale the served model out and, once it stops, back in, a raised version is optimized and rolled out, an impossible gate leaves the previous version serving,
and deleting the ModelDeployment leaves the published versions in storage. Every status read is checked
against the kstatus rules (tests/kstatus.py) and recorded for the Argo CD health test.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import time

import numpy as np
import pytest

from tests.fixtures.cluster import kubectl_binary, wait_for
from tests.fixtures.dataplane import Load, bench_record
from tests.fixtures.operator import apply_md, condition, events, get, get_md, is_ready, wait_md

pytestmark = [pytest.mark.cluster, pytest.mark.tf, pytest.mark.s3]
REPO = pathlib.Path(__file__).resolve().parents[2]
JOB_TIMEOUT = 420          # one optimizer run on 2 shared cores, with margin


@pytest.fixture(scope="module")
def digits_model(s3, tmp_path_factory):
    """Train the digits CNN (a few epochs, in a subprocess: TensorFlow stays out of pytest) and upload it."""
    prefix = f"e2e/digits-{os.getpid()}-{int(time.time())}"
    model_uri, dataset_uri = f"s3://models/{prefix}/base", f"s3://models/{prefix}/digits.npz"
    env = dict(os.environ, **s3.env, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    work = tmp_path_factory.mktemp("digits")
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "python"), str(REPO / "hack" / "train_digits.py"),
                           "--model-uri", model_uri, "--dataset-uri", dataset_uri, "--epochs", "4",
                           "--work-dir", str(work)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"prefix": prefix, "model": model_uri, "dataset": dataset_uri, "npz": str(work / "digits.npz")}


def digits(model: dict, version: int, gates: dict | None = None, mode: str = "int8") -> dict:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "digits"},
        "spec": {
            "model": {"uri": model["model"], "version": version, "storageSecret": "model-store"},
            "optimization": {
                "pruning": {"sparsity": 0.5, "fineTuneEpochs": 1},
                "quantization": {"mode": mode},
                "dataset": {"uri": model["dataset"]},
                "gates": gates or {"maxAccuracyDrop": 0.1, "minCompression": 1.5},
                "outputUri": f"s3://models/{model['prefix']}/optimized",
                "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
                "backoffLimit": 0,
                "activeDeadlineSeconds": 900,
            },
            # On the runner's GPU node, whose pods really run (hack/podrunner.py; kwok's nodes run nothing).
            "serving": {"gpus": 1, "nodeSelector": {"modeldeploy.io/runner": "true", "nvidia.com/gpu.present": "true"},
                        "tolerations": [{"key": "modeldeploy.io/runner", "operator": "Exists"},
                                        {"key": "nvidia.com/gpu", "operator": "Exists"}]},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 4},
            "monitoring": {"intervalSeconds": 5, "failureThreshold": 2},
            "rollout": {"progressDeadlineSeconds": 60},
        },
    }


def assert_served_accuracy(cluster, namespace: str, model: dict, reported: float, name: str = "digits"):
    """hack/demo_predict.py (the demo's last step) against the serving pods: each answers, within the gate,
    and within 0.01 of the accuracy status.optimization reports (the same artefact, the same images)."""
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "python"), str(REPO / "hack" / "demo_predict.py"),
                           "--namespace", namespace, "--name", name, "--dataset", model["npz"],
                           "--kubectl", kubectl_binary()], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, KUBECONFIG=cluster.kubeconfig))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    served = [float(m) for m in re.findall(r"validation images, accuracy ([0-9.]+)", proc.stdout)]
    assert served and all(abs(a - reported) <= 0.01 for a in served), (served, reported, proc.stdout)


def jobs(kubectl, namespace) -> list[dict]:
    return json.loads(kubectl("get", "jobs", "-o", "json", namespace=namespace).stdout)["items"]


def published(s3, prefix: str, version: int) -> bool:
    found = s3.client.list_objects_v2(Bucket="models", Prefix=f"{prefix}/optimized/{version}/_COMPLETE")
    return bool(found.get("Contents"))


def scaled_out_and_in(kubectl, namespace: str, model: dict) -> None:
    """The HPA on the pods' measured CPU (the runner node's kubelet endpoint -> metrics-server): a bounded load
    of validation images over the Service's ready endpoints scales the demo model out (more replicas, Ready, every
    request answered), and the HPA scales it back in to one after the load stops (60 s stabilization here)."""
    def hpa() -> dict:
        return (get(kubectl, namespace, "hpa", "digits") or {}).get("status", {})

    with np.load(model["npz"]) as data:
        body = json.dumps({"instances": data["x_val"][:1].astype("float32").tolist()})
    with Load(kubectl, namespace, "digits", body, workers=4, pause=0.0) as load:
        started = time.monotonic()
        out = wait_for(lambda: (s := hpa()).get("desiredReplicas", 0) >= 2 and s, 240, "the HPA to scale out")
        scale_out = time.monotonic() - started
        utilization = out["currentMetrics"][0]["resource"]["current"]["averageUtilization"]
        md = wait_md(kubectl, namespace, "digits", lambda o: o["status"]["serving"].get("readyReplicas", 0) >= 2,
                     240, "two or more ready replicas")
        counts = load.snapshot()
    stopped = time.monotonic()
    wait_for(lambda: hpa().get("desiredReplicas") == 1, 300, "the HPA to scale back in")
    scale_in = time.monotonic() - stopped
    wait_md(kubectl, namespace, "digits", lambda o: o["status"]["serving"].get("replicas") == 1, 120,
            "one replica after the scale-in")
    replicas = md["status"]["serving"]["readyReplicas"]
    print(f"HPA: out to {out['desiredReplicas']} replicas {scale_out:.0f}s after the load started (CPU "
          f"{utilization}% of the request), back to 1 {scale_in:.0f}s after it stopped; requests {counts}")
    assert utilization > 70 and counts.get(("stable", "ok"), 0) > 0
    assert not counts.get(("stable", "failed")), counts
    bench_record("hpa", {"model": "digits", "replicas": replicas, "scaleOutSeconds": round(scale_out, 1),
                         "scaleInSeconds": round(scale_in, 1), "cpuUtilizationPercent": utilization,
                         "requests": {f"{t} {r}": n for (t, r), n in counts.items()}})


@pytest.mark.timeout(1800)
def test_digits_optimized_served_on_gpus_upgraded_and_gated(kubectl, cluster, namespace, operator, s3,
                                                             digits_model):
    apply_md(kubectl, namespace, digits(digits_model, 1))
    md = wait_md(kubectl, namespace, "digits", lambda o: condition(o, "Optimized").get("reason") == "JobRunning",
                 60, "the optimizer Job to start")
    assert condition(md, "Reconciling")["status"] == "True" and md["status"]["phase"] == "Optimizing"
    job1 = md["status"]["optimization"]["job"]
    assert job1.startswith("digits-opt-1-")

    # SIGKILL the operator while the Job runs; after the restart there is still exactly one Job for version 1.
    running = wait_for(lambda: [p for p in json.loads(kubectl(
        "get", "pods", "-l", f"job-name={job1}", "-o", "json", namespace=namespace).stdout)["items"]
        if p["status"].get("phase") == "Running"], 120, "the optimizer pod to run")
    # As root the optimizer's container runs inside the optimizer image (make images), as its non-root user.
    cluster.expect_image(running[0]["status"]["containerStatuses"][0], "optimizer")
    operator.kill()
    time.sleep(2)       # part of the scenario, not a wait for anything: the Job runs on with no operator at all
    operator.start()

    proc = kubectl("wait", "--for=condition=Ready", "modeldeployment/digits", f"--timeout={JOB_TIMEOUT}s",
                   namespace=namespace, check=False, timeout=JOB_TIMEOUT + 30)
    md = get_md(kubectl, namespace, "digits")
    assert proc.returncode == 0, f"{proc.stderr}\n{json.dumps(md.get('status'), indent=1)}\n{operator.logs()[-3000:]}"
    assert [j["metadata"]["name"] for j in jobs(kubectl, namespace)] == [job1]
    st = md["status"]
    assert is_ready(md) and st["model"]["servingVersion"] == 1 and st["model"]["lastGoodVersion"] == 1
    opt = st["optimization"]
    # accuracyDrop may be negative: fine-tuning while pruning can beat a briefly trained baseline.
    assert opt["compressionRatio"] > 1.5 and -1.0 < opt["accuracyDrop"] <= 0.1 and opt["sparsity"] >= 0.45
    assert opt["uri"] == f"s3://models/{digits_model['prefix']}/optimized/1" and opt["quantization"] == "int8"
    assert condition(md, "Optimized")["reason"] == "JobSucceeded" and published(s3, digits_model["prefix"], 1)
    # Latency measured with the serving pod's thread pools (its 500m CPU request -> 1 thread), p99 and
    # throughput beside the p50; what a pod downloads, before and after.
    assert opt["latencyThreads"] == 1 and opt["latencyRuntime"] == "tensorflow"
    assert opt["optimizedLatencyP99Ms"] >= opt["optimizedLatencyMs"] > 0 and opt["optimizedThroughput"] > 0
    assert opt["compressionRatio"] == round(opt["originalCompressedBytes"] / opt["compressedBytes"], 3)
    assert opt["compressedBytes"] == opt["runtimes"]["tensorflow"]["compressedBytes"]

    # Serving: GPU pods on the GPU node, pulling the published version; HPA, Service and PDB exist.
    pods = json.loads(kubectl("get", "pods", "-l", "app.kubernetes.io/component=serving", "-o", "json",
                              namespace=namespace).stdout)["items"]
    assert pods and all(p["spec"]["nodeName"] == "run-gpu-0" for p in pods)
    # The pull init container ran inside the operator image (the image the chart gives it).
    for p in pods:
        cluster.expect_image(p["status"]["initContainerStatuses"][0], "operator")
    # Every Ready pod answers :predict on the validation images with the accuracy the optimizer reported.
    assert_served_accuracy(cluster, namespace, digits_model, opt["optimizedAccuracy"])
    # TF Serving replayed the version's warmup records before reporting it AVAILABLE.
    logs = "".join(p.read_text(errors="replace") for p in (REPO / ".cluster" / "pods").glob(
        f"{namespace}_digits-*/tf-serving.log"))
    from modeldeploy.optimize import warmup
    assert f"Number of warmup records read: {warmup.RECORDS}." in logs, logs[-2000:]
    tpl = get(kubectl, namespace, "deployment", "digits")["spec"]["template"]["spec"]
    assert tpl["containers"][0]["image"].endswith("-gpu")
    assert tpl["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert tpl["initContainers"][0]["args"] == [opt["uri"], "/models/digits/1", "--runtime", "tensorflow",
                                                "--accelerator", "gpu"]
    hpa = get(kubectl, namespace, "hpa", "digits")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    assert get(kubectl, namespace, "service", "digits") and get(kubectl, namespace, "pdb", "digits")
    scaled_out_and_in(kubectl, namespace, digits_model)

    # Raise the version, now quantized to float16: a second Job, a rollout, servingVersion 2; the GPU pods pull
    # the SavedModel that computes in float16, and status reports that artefact (no latency: no GPU measured it).
    apply_md(kubectl, namespace, digits(digits_model, 2, mode="float16"))
    md = wait_md(kubectl, namespace, "digits", lambda o: is_ready(o) and o["status"]["model"].get("servingVersion") == 2,
                 JOB_TIMEOUT, "version 2 Ready")
    names = sorted(j["metadata"]["name"] for j in jobs(kubectl, namespace))
    assert len(names) == 2 and names[0] == job1 and names[1].startswith("digits-opt-2-")
    assert md["status"]["model"]["lastGoodVersion"] == 2 and published(s3, digits_model["prefix"], 2)
    opt2 = md["status"]["optimization"]
    dep = get(kubectl, namespace, "deployment", "digits")
    assert dep["spec"]["template"]["metadata"]["labels"]["modeldeploy.io/version"] == "2"
    wait_for(lambda: all(p["metadata"]["labels"]["modeldeploy.io/version"] == "2" for p in json.loads(kubectl(
        "get", "pods", "-l", "app.kubernetes.io/component=serving", "-o", "json", namespace=namespace).stdout)["items"]),
        120, "version 1's pods gone")
    assert (opt2["quantization"], opt2["latencyRuntime"]) == ("float16", "tensorflow-gpu")
    assert opt2["compressedBytes"] == opt2["runtimes"]["tensorflow-gpu"]["compressedBytes"]
    assert "optimizedLatencyMs" not in opt2 and "latencyMs" not in opt2["runtimes"]["tensorflow-gpu"]
    manifests = list((REPO / ".cluster" / "pods").glob(f"{namespace}_digits-*/volumes/*/digits/2/_COMPLETE"))
    assert manifests and all(json.loads(m.read_text()).get("variant") == "gpu-float16" for m in manifests)
    assert_served_accuracy(cluster, namespace, digits_model, md["status"]["optimization"]["optimizedAccuracy"])

    # An impossible gate: nothing is published, version 2 keeps serving, and the status says why.
    apply_md(kubectl, namespace, digits(digits_model, 3, gates={"minCompression": 1000.0}))
    md = wait_md(kubectl, namespace, "digits", lambda o: condition(o, "Stalled").get("status") == "True"
                 and o["status"]["observedGeneration"] == o["metadata"]["generation"], JOB_TIMEOUT, "the gate to fail")
    assert condition(md, "Optimized")["reason"] == "CompressionGateFailed"
    assert "minCompression" in condition(md, "Optimized")["message"]
    assert "version 2 keeps serving" in condition(md, "Stalled")["message"]
    assert condition(md, "Available")["status"] == "True" and md["status"]["model"]["servingVersion"] == 2
    assert not published(s3, digits_model["prefix"], 3)
    reasons = [e["reason"] for e in events(kubectl, namespace, "digits")]
    assert reasons.count("JobStarted") == 3 and reasons.count("JobSucceeded") == 2, reasons
    assert reasons.count("CompressionGateFailed") == 1 and reasons.count("RolloutCompleted") == 2, reasons

    # Deleting the ModelDeployment never deletes published versions.
    kubectl("delete", "modeldeployment", "digits", "--wait=true", "--timeout=60s", namespace=namespace)
    assert published(s3, digits_model["prefix"], 1) and published(s3, digits_model["prefix"], 2)

    # Re-created: version 2 is in storage. The operator reads no Secret (the chart's default); its Job finds the
    # version published at once and passes on that version's report, which the operator adopts: no training.
    wait_for(lambda: not jobs(kubectl, namespace), 120, "the deleted ModelDeployment's Jobs collected")
    apply_md(kubectl, namespace, digits(digits_model, 2, mode="float16"))
    md = wait_md(kubectl, namespace, "digits", lambda o: is_ready(o) and o["status"]["model"].get("servingVersion") == 2,
                 300, "the re-created ModelDeployment Ready on the published version 2")
    assert condition(md, "Optimized")["reason"] == "AlreadyPublished", condition(md, "Optimized")
    assert {k: md["status"]["optimization"].get(k) for k in ("compressionRatio", "optimizedAccuracy", "uri")} == \
        {k: opt2.get(k) for k in ("compressionRatio", "optimizedAccuracy", "uri")}
    (job,) = jobs(kubectl, namespace)
    assert job["status"].get("failed") == 1, job["status"]       # exit 9 (AlreadyPublished), a permanent code

    # Another model with the same outputUri and version: refused (OutputConflict), never served or published.
    other = digits(digits_model, 2, mode="float16")
    other["metadata"]["name"] = "other"
    other["spec"]["model"]["uri"] = f"s3://models/{digits_model['prefix']}/other-base"
    apply_md(kubectl, namespace, other)
    md = wait_md(kubectl, namespace, "other", lambda o: condition(o, "Stalled").get("status") == "True", 300,
                 "the second ModelDeployment on the same outputUri to stall")
    assert "OutputConflict" in condition(md, "Optimized")["message"], condition(md, "Optimized")
    assert digits_model["model"] in condition(md, "Optimized")["message"]
    assert kubectl("get", "deployment", "other", namespace=namespace, check=False).returncode != 0
    assert get_md(kubectl, namespace, "digits")["status"]["model"]["servingVersion"] == 2


@pytest.mark.timeout(900)
def test_digits_served_by_tflite_then_tensorflow_then_auto_without_a_new_job(kubectl, cluster, namespace, operator,
                                                                             s3, digits_model):
    """spec.serving.runtime tflite: the pod pulls model.tflite only and TF Serving runs it
    (--prefer_tflite_model); status.optimization gives that artefact's accuracy, latency and pulled bytes, and
    the pod answers with that accuracy. Switching to tensorflow rolls the same version out again, no Job; so does
    runtime auto with batching auto, which serve the runtime that measured fastest with a batch size chosen from
    its measured curve."""
    md = digits(digits_model, 1)
    md["metadata"]["name"] = "lite"
    md["spec"]["optimization"]["outputUri"] = f"s3://models/{digits_model['prefix']}/lite"
    md["spec"]["optimization"]["export"] = {"onnx": True}
    md["spec"]["serving"] = {"runtime": "tflite", "nodeSelector": {"modeldeploy.io/runner": "true"},
                             "tolerations": [{"key": "modeldeploy.io/runner", "operator": "Exists"}]}
    del md["spec"]["autoscaling"]
    apply_md(kubectl, namespace, md)
    got = wait_md(kubectl, namespace, "lite", lambda o: is_ready(o) and o["status"].get("serving", {}).get(
        "runtime") == "tflite", JOB_TIMEOUT, "the tflite runtime Ready")
    opt = got["status"]["optimization"]
    lite = opt["runtimes"]["tflite"]
    assert opt["latencyRuntime"] == "tflite" and opt["optimizedLatencyMs"] == lite["latencyMs"]
    assert (opt["compressedBytes"], opt["optimizedAccuracy"]) == (lite["compressedBytes"], lite["accuracy"])
    assert lite["compressedBytes"] < opt["runtimes"]["tensorflow"]["compressedBytes"]
    # model.onnx beside the version, checked in onnxruntime; no serving pod pulls it.
    assert opt["onnx"]["savedModelAgreement"] >= 0.99 and opt["onnx"]["bytes"] > 0, opt["onnx"]
    assert opt["onnx"]["agreement"] > 0.9, opt["onnx"]     # against the float32 original, as the SavedModel's
    pulled = list((REPO / ".cluster" / "pods").glob(f"{namespace}_lite-*/volumes/*/lite/1/_COMPLETE"))
    assert pulled and not any("model.onnx" in json.loads(m.read_text())["files"] for m in pulled)
    logs = "".join(p.read_text(errors="replace") for p in (REPO / ".cluster" / "pods").glob(
        f"{namespace}_lite-*/tf-serving.log"))
    assert "serving TFLite model" in logs, logs[-2000:]
    assert_served_accuracy(cluster, namespace, digits_model, opt["optimizedAccuracy"], name="lite")

    md["spec"]["serving"]["runtime"] = "tensorflow"
    apply_md(kubectl, namespace, md)
    got = wait_md(kubectl, namespace, "lite", lambda o: is_ready(o) and o["status"]["serving"]["runtime"] ==
                  "tensorflow" and o["status"]["observedGeneration"] == o["metadata"]["generation"], 300,
                  "the same version Ready on the tensorflow runtime")
    opt = got["status"]["optimization"]
    assert opt["latencyRuntime"] == "tensorflow" and opt["optimizedAccuracy"] == opt["runtimes"]["tensorflow"]["accuracy"]
    assert len([j for j in jobs(kubectl, namespace) if j["metadata"]["name"].startswith("lite-opt-")]) == 1
    assert_served_accuracy(cluster, namespace, digits_model, opt["optimizedAccuracy"], name="lite")

    # auto: the runtime that measured fastest, and batching chosen from the batch curve within the budget.
    md["spec"]["serving"].update(runtime="auto", batching={"auto": True, "maxLatencyMs": 50})
    apply_md(kubectl, namespace, md)
    got = wait_md(kubectl, namespace, "lite", lambda o: is_ready(o) and "batching" in o["status"]["serving"]
                  and o["status"]["observedGeneration"] == o["metadata"]["generation"], 300,
                  "the same version Ready with runtime and batching chosen")
    st = got["status"]
    figures = st["optimization"]["runtimes"]
    fastest = min(sorted(figures), key=lambda name: figures[name]["latencyMs"])
    assert st["serving"]["runtime"] == fastest and st["serving"]["runtimeReason"].startswith(f"auto: {fastest}")
    chosen = st["serving"]["batching"]
    curve = {p["batchSize"]: p for p in figures[fastest]["batchCurve"]}
    assert set(curve) == {1, 2, 4, 8, 16, 32, 64}
    point = curve[chosen["maxBatchSize"]]
    assert chosen["expectedLatencyMs"] == pytest.approx(point["latencyMs"] + point["latencyP99Ms"], abs=1e-3)
    assert chosen["expectedLatencyMs"] <= 50
    template = json.loads(kubectl("get", "deployment", "lite", "-o", "json", namespace=namespace).stdout)
    batching = template["spec"]["template"]["metadata"]["annotations"]["config.modeldeploy.io/batching.config"]
    assert f"max_batch_size {{ value: {chosen['maxBatchSize']} }}" in batching
    assert f"batch_timeout_micros {{ value: {chosen['batchTimeoutMicros']} }}" in batching
    assert len([j for j in jobs(kubectl, namespace) if j["metadata"]["name"].startswith("lite-opt-")]) == 1
    assert_served_accuracy(cluster, namespace, digits_model, st["optimization"]["optimizedAccuracy"], name="lite")
