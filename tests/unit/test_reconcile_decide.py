"""The reconciler's pure decisions: optimization, rollout, health, rollback and kstatus-exact status.

Scenarios feed `decide()` plain dicts (a Deployment, pods, a Job view) and check the plan; every status it
produces also passes the kstatus checker the end-to-end tests use, and feeding a status back with the same
observation changes nothing (zero writes when idle).
"""
from __future__ import annotations

import pytest

from modeldeploy.api import spec as specmod
from modeldeploy.api.status import get_condition
from modeldeploy.controller import decide as dc
from modeldeploy.controller.observe import JobView, deployment_view, job_view
from modeldeploy.resources import config
from modeldeploy.resources.deployment import ServingTarget, build_deployment
from modeldeploy.resources.job import job_name
from tests.kstatus import check_kstatus

NOW = "2025-01-01T00:00:00Z"
LATER = "2025-01-01T00:05:00Z"
OPT = {"pruning": {"sparsity": 0.5}, "quantization": {"mode": "dynamic"},
       "outputUri": "s3://models/digits/optimized"}
REPORT = {"ok": True, "version": 2, "quantize": "dynamic", "sparsity": 0.5, "compressionRatio": 3.2,
          "accuracyDrop": 0.004, "baselineAccuracy": 0.97, "optimizedAccuracy": 0.966, "originalBytes": 1000,
          "optimizedBytes": 500, "originalCompressedBytes": 900, "compressedBytes": 281,
          "uri": "s3://models/digits/optimized/2", "metric": "accuracy", "latency": {"baselineB32": 1.5}}


def md(version=1, generation=1, **spec):
    body = {"model": {"uri": "s3://models/digits/base", "version": version, "storageSecret": "model-store"},
            "monitoring": {"failureThreshold": 2}}
    body.update(spec)
    return specmod.parse({"metadata": {"name": "digits", "namespace": "ml"}, "spec": body})


def deployment(spec, target=None, *, ready=None, replicas=None, updated=None, available=None, old=0,
               progressing=("True", "NewReplicaSetAvailable", "ok"), observed=True):
    """A live Deployment built from our own builder, with a status."""
    dep = build_deployment(spec, target)
    n = replicas if replicas is not None else dep["spec"].get("replicas", 1)
    dep["spec"]["replicas"] = n
    dep["metadata"]["generation"] = 2
    ready = n if ready is None else ready
    updated = n if updated is None else updated
    dep["status"] = {"observedGeneration": 2 if observed else 1, "replicas": updated + old,
                     "updatedReplicas": updated, "readyReplicas": ready,
                     "availableReplicas": ready if available is None else available,
                     "conditions": [{"type": "Progressing", "status": progressing[0], "reason": progressing[1],
                                     "message": progressing[2]}]}
    return dep


def pod(name, version, *, image="tensorflow/serving:2.21.0", ready=True, waiting=None, last=None, restarts=0,
        unschedulable=None):
    status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
              "containerStatuses": [{"name": "tf-serving", "restartCount": restarts,
                                     "state": {"waiting": {"reason": waiting, "message": "back-off"}} if waiting
                                     else {"running": {}},
                                     **({"lastState": {"terminated": last}} if last else {})}]}
    if unschedulable:
        status = {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable}]}
    return {"metadata": {"name": name, "labels": {"modeldeploy.io/version": str(version)}},
            "spec": {"containers": [{"name": "tf-serving", "image": image}]}, "status": status}


def observe(status=None, generation=1, **kw):
    return dc.Observed(generation=generation, status=status or {}, now=kw.pop("now", NOW), **kw)


def checked(spec, obs, generation=1):
    """decide(), then the kstatus checker on the result, then idempotence: same inputs again change nothing."""
    plan = dc.decide(spec, obs)
    body = {"kind": "ModelDeployment", "metadata": {"name": "digits", "generation": generation},
            "status": plan.status}
    assert check_kstatus(body, settled=True) == []
    again = dc.decide(spec, dc.Observed(**{**obs.__dict__, "status": plan.status, "now": LATER,
                                           "interval_check": False}))
    if not plan.rolled_back:
        assert again.status == plan.status, "a second identical reconcile must not change status"
        assert again.events == [] and again.create_job == plan.create_job and again.target == plan.target
    return plan


def cond(plan, type_):
    c = get_condition(plan.status["conditions"], type_)
    return c["status"], c["reason"], c["message"]


def serving(spec, version=None):
    version = version or spec.model.version
    return ServingTarget(version, spec.serving.image, specmod.source_uri(spec, version), spec.serving.runtime)


# ------------------------------------------------------------------------------------------------ as is

def test_first_reconcile_no_optimization_starts_rollout():
    spec = md()
    plan = checked(spec, observe())
    assert plan.target == serving(spec) and not plan.create_job
    assert cond(plan, "Ready")[:2] == ("False", "RolloutInProgress")
    assert cond(plan, "Reconciling")[0] == "True" and cond(plan, "Stalled")[0] == "False"
    assert cond(plan, "Optimized")[:2] == ("True", "NotRequested")
    assert plan.events == [("Normal", "RolloutStarted", "rolling out version 1 (tensorflow/serving:2.21.0)")]
    assert plan.status["model"] == {"requestedVersion": 1, "uri": "s3://models/digits/base"}
    assert "servingVersion" not in plan.status["model"]


def test_rollout_complete_is_ready_and_records_last_good():
    spec = md()
    first = dc.decide(spec, observe())
    plan = checked(spec, observe(first.status, deployment=deployment_view(deployment(spec)),
                                 pods=(pod("digits-a", 1),)))
    assert cond(plan, "Ready") == ("True", "ReplicasReady", "version 1 serves on 1 ready replicas: 1/1 replicas ready")
    assert cond(plan, "Available")[0] == "True" and cond(plan, "Degraded")[0] == "False"
    assert cond(plan, "Reconciling")[0] == "False"
    assert plan.status["model"]["servingVersion"] == 1 and plan.status["model"]["lastGoodVersion"] == 1
    assert plan.status["model"]["lastGoodImage"] == "tensorflow/serving:2.21.0"
    assert plan.status["phase"] == "Ready" and plan.status["health"]["state"] == "Healthy"
    assert ("Normal", "RolloutCompleted", "version 1 serves on 1 ready replicas") in plan.events
    assert plan.status["serving"]["restUrl"] == "http://digits.ml.svc:8501/v1/models/digits"
    assert plan.last_good == serving(spec)          # recorded on the Deployment as the rollback target


def test_a_rollout_started_and_done_before_the_first_status_write_is_one_event():
    """A first pass put off by a burst (controller/monitor.py): the next one finds the Deployment done already
    and says so once, with what the RolloutStarted Event would have named."""
    spec = md()
    plan = checked(spec, observe({"observedGeneration": 0}, deployment=deployment_view(deployment(spec)),
                                 pods=(pod("digits-a", 1),)))
    assert cond(plan, "Ready")[:2] == ("True", "ReplicasReady")
    assert plan.events == [("Normal", "RolloutCompleted", "rolled out version 1 (tensorflow/serving:2.21.0); "
                                                          "version 1 serves on 1 ready replicas")]


def test_ready_needs_minimum_replicas_of_the_target_version():
    spec = md(autoscaling={"minReplicas": 2, "maxReplicas": 4})
    dep = deployment_view(deployment(spec, replicas=2, ready=1, available=1))
    plan = checked(spec, observe(deployment=dep, pods=(pod("a", 1), pod("b", 1, ready=False))))
    assert cond(plan, "Ready")[0] == "False" and cond(plan, "Reconciling")[0] == "True"
    assert cond(plan, "Available") == ("False", "ReplicasNotReady", "1/2 replicas ready: pod b ReplicasNotReady: "
                                                                    "not ready (Running)")


def test_scaled_to_zero_is_ready_with_reason():
    spec = md(serving={"replicas": 0})
    plan = checked(spec, observe(deployment=deployment_view(deployment(spec))))
    assert cond(plan, "Ready")[:2] == ("True", "ScaledToZero")
    assert cond(plan, "Available")[:2] == ("False", "ScaledToZero")


def test_unschedulable_gpu_message_reaches_conditions():
    spec = md(serving={"gpus": 1})
    msg = "0/4 nodes are available: 2 Insufficient nvidia.com/gpu, 2 node(s) didn't match Pod's node affinity/selector."
    dep = deployment_view(deployment(spec, ready=0, available=0, updated=1,
                                     progressing=("True", "ReplicaSetUpdated", "progressing")))
    plan = checked(spec, observe(deployment=dep, pods=(pod("digits-7f9c", 1, unschedulable=msg),)))
    assert cond(plan, "Available") == ("False", "Unschedulable", f"0/1 replicas ready: pod digits-7f9c Unschedulable: {msg}")
    assert cond(plan, "Ready")[1] == "Unschedulable" and cond(plan, "Reconciling")[0] == "True"
    # The progress deadline then says the rollout failed: with no earlier version there is nothing to roll back to.
    dep = deployment_view(deployment(spec, ready=0, available=0, updated=1,
                                     progressing=("False", "ProgressDeadlineExceeded", 'ReplicaSet "x" has timed out progressing.')))
    plan = checked(spec, observe(plan.status, deployment=dep, pods=(pod("digits-7f9c", 1, unschedulable=msg),)))
    status, reason, message = cond(plan, "Stalled")
    assert (status, reason) == ("True", "ProgressDeadlineExceeded") and "no earlier good version" in message
    assert "Insufficient nvidia.com/gpu" in message and cond(plan, "Reconciling")[0] == "False"
    assert plan.target == serving(spec) and not plan.rolled_back


# ------------------------------------------------------------------------------------------------ optimization

def test_optimization_creates_job_once_and_serves_nothing_yet():
    spec = md(version=2, optimization=OPT)
    plan = checked(spec, observe())
    assert plan.create_job and plan.target is None
    assert cond(plan, "Optimized")[:2] == ("False", "JobRunning")
    assert cond(plan, "Ready")[:2] == ("False", "JobRunning") and plan.status["phase"] == "Optimizing"
    assert plan.events[0][:2] == ("Normal", "JobStarted")
    assert plan.status["optimization"] == {"job": f"digits-opt-2-{specmod.optimization_hash(spec)}", "version": 2,
                                           "hash": specmod.optimization_hash(spec)}


def test_job_running_waits_and_old_version_keeps_serving():
    spec1, spec = md(version=1, optimization=OPT), md(version=2, generation=2, optimization=OPT)
    old = serving(spec1, 1)
    dep = deployment_view(deployment(spec1, old))
    prev = dc.decide(spec1, observe(deployment=dep, pods=(pod("a", 1),),
                                    published=True, published_report=dict(REPORT, version=1))).status
    name = f"digits-opt-2-{specmod.optimization_hash(spec)}"
    plan = checked(spec, observe(prev, generation=2, job=JobView(name=name, state="running",
                                                                 start_time=NOW), deployment=dep,
                                 pods=(pod("a", 1),)), generation=2)
    assert plan.target == old and not plan.create_job
    assert cond(plan, "Ready") == ("False", "JobRunning", f"Job {name} is optimizing version 2; version 1 keeps serving")
    assert plan.status["model"]["servingVersion"] == 1


def test_job_success_records_report_and_rolls_out():
    spec = md(version=2, optimization=OPT)
    name = f"digits-opt-2-{specmod.optimization_hash(spec)}"
    job = {"metadata": {"name": name}, "status": {"startTime": NOW, "completionTime": LATER,
                                                 "conditions": [{"type": "Complete", "status": "True"}]}}
    jpod = {"metadata": {"name": name + "-x", "creationTimestamp": NOW},
            "status": {"phase": "Succeeded", "containerStatuses": [{"name": "optimizer", "state": {"terminated": {
                "exitCode": 0, "message": __import__("json").dumps(REPORT)}}}]}}
    plan = checked(spec, observe(job=job_view(job, [jpod])))
    opt = plan.status["optimization"]
    assert opt["compressionRatio"] == 3.2 and opt["accuracyDrop"] == 0.004 and opt["quantization"] == "dynamic"
    assert opt["uri"] == "s3://models/digits/optimized/2" and opt["completionTime"] == LATER
    assert opt["baselineLatencyB32Ms"] == 1.5 and opt["originalBytes"] == 1000
    assert cond(plan, "Optimized")[:2] == ("True", "JobSucceeded")
    assert plan.target == serving(spec) and plan.target.uri == "s3://models/digits/optimized/2"


@pytest.mark.parametrize("message,gates,reason", [
    # The error record names the failed gates; the message is for people.
    ("accuracy drop 0.0500 exceeds the limit 0.0100 (baseline 0.97, optimized 0.92); nothing was published",
     ["maxAccuracyDrop"], "AccuracyGateFailed"),
    ("compression 1.20x is below the limit 2.00x (gzip 1 -> 1 bytes); nothing was published",
     ["minCompression"], "CompressionGateFailed"),
    ("both failed; nothing was published", ["minCompression", "maxAccuracyDrop"], "AccuracyGateFailed"),
    # Records of 0.1.0 optimizer images carry no `gates`: the gate's name in the message still counts.
    ("accuracy drop 0.0500 exceeds maxAccuracyDrop 0.0100 (baseline 0.97, optimized 0.92); nothing was published",
     None, "AccuracyGateFailed"),
    ("compression 1.20x is below minCompression 2.00x (gzip 1 -> 1 bytes); nothing was published",
     None, "CompressionGateFailed"),
])
def test_gate_failure_stalls_and_leaves_old_version_serving(message, gates, reason):
    spec1, spec = md(version=1), md(version=2, generation=2, optimization=OPT)
    old = serving(spec1, 1)
    dep = deployment_view(deployment(spec1, old))
    prev = dc.decide(spec1, observe(deployment=dep, pods=(pod("a", 1),))).status
    created = dc.decide(spec, observe(prev, generation=2, deployment=dep, pods=(pod("a", 1),)))   # the Job's pass
    assert created.create_job and [e[1] for e in created.events] == ["JobStarted"]
    prev = created.status
    name = f"digits-opt-2-{specmod.optimization_hash(spec)}"
    term = {"ok": False, "error": {"reason": "GateFailed", "exitCode": 8, "message": message}}
    if gates is not None:
        term["error"]["gates"] = gates
    job = {"metadata": {"name": name}, "status": {"conditions": [{"type": "Failed", "status": "True",
                                                                  "reason": "PodFailurePolicy"}]}}
    jpod = {"metadata": {"name": "p"}, "status": {"phase": "Failed", "containerStatuses": [
        {"name": "optimizer", "state": {"terminated": {"exitCode": 8, "message": __import__("json").dumps(term)}}}]}}
    plan = checked(spec, observe(prev, generation=2, job=job_view(job, [jpod]), deployment=dep, pods=(pod("a", 1),)),
                   generation=2)
    assert plan.target == old and not plan.create_job
    assert cond(plan, "Optimized")[:2] == ("False", reason) and message in cond(plan, "Optimized")[2]
    stalled = cond(plan, "Stalled")
    assert stalled[:2] == ("True", reason) and "version 1 keeps serving" in stalled[2]
    assert cond(plan, "Ready")[0] == "False" and cond(plan, "Available")[0] == "True"
    assert cond(plan, "Reconciling")[0] == "False" and plan.status["model"]["failedVersion"] == 2
    assert plan.events == [("Warning", reason, cond(plan, "Optimized")[2])]
    # Latched: even without the Job (deleted by its TTL), this generation does not retry.
    again = dc.decide(spec, observe(plan.status, generation=2, deployment=dep, pods=(pod("a", 1),)))
    assert not again.create_job and again.status == plan.status


def test_already_published_version_is_served_without_a_job():
    spec = md(version=2, optimization=OPT)
    plan = checked(spec, observe(published=True, published_report=REPORT))
    assert not plan.create_job and plan.target == serving(spec)
    assert cond(plan, "Optimized")[:2] == ("True", "AlreadyPublished")
    assert plan.status["optimization"]["compressionRatio"] == 3.2


def test_a_job_that_found_the_version_published_is_adopted_with_the_figures_it_reported():
    """The Job's termination message carries the published version's report.json: the operator adopts it
    without reading storage (it holds no Secret access by default)."""
    spec = md(version=2, optimization=OPT)
    failed = dict(REPORT, ok=False, error={"reason": "AlreadyPublished", "exitCode": 9, "message": "published"})
    job = JobView(name=job_name(spec), state="failed", report=failed, reason="AlreadyPublished",
                  message="published")
    plan = checked(spec, observe(job=job))
    assert not plan.create_job and plan.target == serving(spec)
    assert cond(plan, "Optimized")[:2] == ("True", "AlreadyPublished")
    assert plan.status["optimization"]["compressionRatio"] == 3.2
    assert plan.status["optimization"]["uri"] == REPORT["uri"]


# ------------------------------------------------------------------------------------------------ runtimes

def _pulled(compressed, ratio):
    return {"bytes": compressed * 2, "compressedBytes": compressed, "ratio": ratio}


RUNTIME_REPORT = dict(REPORT, latency={"savedModelB1": 2.0, "savedModelB1P99": 3.0, "savedModelB32": 9.0,
                                       "savedModelThroughputB32": 3500.0, "tfliteB1": 0.2, "tfliteB1P99": 0.5,
                                       "tfliteB32": 4.0, "tfliteThroughputB32": 8000.0, "threads": 2},
                      download={"sourceCompressedBytes": 1000, "runtimes": {"tensorflow": _pulled(400, 2.5),
                                                                            "tflite": _pulled(100, 10.0)}})


@pytest.mark.parametrize("runtime, latency, p99, pulled, ratio", [("tensorflow", 2.0, 3.0, 400, 2.5),
                                                                   ("tflite", 0.2, 0.5, 100, 10.0)])
def test_status_gives_the_figures_of_the_runtime_that_serves(runtime, latency, p99, pulled, ratio):
    """optimizedLatencyMs and the sizes are those of the artefact the pods run and of the files they pull,
    against the model as stored; both runtimes' figures stay in status.optimization.runtimes, so a runtime change
    needs no new Job."""
    spec = md(version=2, optimization=OPT, serving={"runtime": runtime})
    plan = checked(spec, observe(job=JobView(name=job_name(spec), state="succeeded", report=RUNTIME_REPORT)))
    o = plan.status["optimization"]
    assert (o["latencyRuntime"], o["optimizedLatencyMs"], o["optimizedLatencyP99Ms"]) == (runtime, latency, p99)
    assert (o["originalCompressedBytes"], o["compressedBytes"], o["compressionRatio"], o["optimizedBytes"],
            o["latencyThreads"]) == (1000, pulled, ratio, 2 * pulled, 2)
    assert plan.status["serving"]["runtimeReason"] == f"spec.serving.runtime is {runtime}"
    assert set(o["runtimes"]) == {"tensorflow", "tflite"}
    assert plan.target == serving(spec) and plan.target.runtime == runtime
    args = build_deployment(spec, plan.target)["spec"]["template"]["spec"]["initContainers"][0]["args"]
    assert args[-2:] == ["--runtime", runtime]


def test_the_runtime_is_chosen_once_per_decision(monkeypatch):
    """Each phase reads the one choice optimization() made (a frozen RuntimeChoice), whatever the state."""
    from modeldeploy.controller import tuning
    calls = []
    choose = tuning.choose_runtime
    monkeypatch.setattr(tuning, "choose_runtime", lambda *a: calls.append(a) or choose(*a))
    spec = md(version=2, optimization=OPT, serving={"runtime": "auto"})
    succeeded = JobView(name=job_name(spec), state="succeeded", report=RUNTIME_REPORT)
    published = dc.decide(spec, observe(job=succeeded)).status
    for obs in (observe(), observe(job=succeeded), observe(published), observe(published=True,
                                                                               published_report=REPORT)):
        calls.clear()
        dc.decide(spec, obs)
        assert len(calls) == 1
    calls.clear()
    dc.decide(md(version=2), observe())
    assert len(calls) == 1


@pytest.mark.parametrize("gpus, tflite_ms, expected", [(0, 0.2, "tflite"), (0, 2.5, "tensorflow"),
                                                        (0, 2.0, "tensorflow"), (1, 0.2, "tensorflow")])
def test_auto_serves_what_measured_fastest_on_its_kind_of_node(gpus, tflite_ms, expected):
    report = dict(RUNTIME_REPORT, latency=dict(RUNTIME_REPORT["latency"], tfliteB1=tflite_ms))
    spec = md(version=2, optimization=OPT, serving={"runtime": "auto", "gpus": gpus})
    plan = checked(spec, observe(job=JobView(name=job_name(spec), state="succeeded", report=report)))
    assert plan.target.runtime == expected and plan.status["optimization"]["latencyRuntime"] == expected
    why = plan.status["serving"]["runtimeReason"]
    assert why.startswith(f"auto: {expected}")
    assert ("GPU" in why) if gpus else (f"tflite {tflite_ms:.3g} ms" in why and "2 threads" in why)
    args = build_deployment(spec, plan.target)["spec"]["template"]["spec"]["initContainers"][0]["args"]
    assert args[2:] == ["--runtime", expected] + (["--accelerator", "gpu"] if gpus else [])


def test_gpu_pods_of_a_float16_version_pull_and_report_the_float16_compute_savedmodel():
    report = dict(RUNTIME_REPORT, quantize="float16",
                  gpuFloat16={"dir": "gpu-float16", "accuracy": 0.95, "accuracyDrop": 0.016},
                  download={"sourceBytes": 2000, "sourceCompressedBytes": 1000, "runtimes": {
                      "tensorflow": _pulled(400, 2.5), "tensorflow-gpu": _pulled(380, 2.63)}})
    spec = md(version=2, optimization={"quantization": {"mode": "float16"}, "outputUri": "s3://models/d/opt"},
              serving={"gpus": 1})
    plan = checked(spec, observe(job=JobView(name=job_name(spec), state="succeeded", report=report)))
    o = plan.status["optimization"]
    assert (o["latencyRuntime"], o["compressedBytes"], o["compressionRatio"], o["optimizedAccuracy"]) == \
        ("tensorflow-gpu", 380, 2.63, 0.95)
    # Its speed was measured on CPU only: no latency is claimed for the GPU pods.
    assert not any(k.startswith("optimizedLatency") or k == "optimizedThroughput" for k in o)
    assert plan.target.runtime == "tensorflow"
    args = build_deployment(spec, plan.target)["spec"]["template"]["spec"]["initContainers"][0]["args"]
    assert args[2:] == ["--runtime", "tensorflow", "--accelerator", "gpu"]
    cpu = md(version=2, optimization={"quantization": {"mode": "float16"}, "outputUri": "s3://models/d/opt"})
    plan = checked(cpu, observe(job=JobView(name=job_name(cpu), state="succeeded", report=report)))
    assert (plan.status["optimization"]["latencyRuntime"], plan.status["optimization"]["compressedBytes"]) == \
        ("tensorflow", 400)


def test_auto_on_a_version_without_model_tflite_serves_the_savedmodel():
    report = dict(RUNTIME_REPORT, download={"sourceCompressedBytes": 1000,
                                            "runtimes": {"tensorflow": _pulled(400, 2.5)}})
    spec = md(version=2, optimization=OPT, serving={"runtime": "auto"})
    plan = checked(spec, observe(job=JobView(name=job_name(spec), state="succeeded", report=report)))
    assert plan.target.runtime == "tensorflow" and cond(plan, "Optimized")[0] == "True"


def test_search_winner_lands_in_status_and_is_what_auto_serves():
    winner = {"sparsity": 0.5, "mode": "int8", "runtime": "tensorflow"}
    report = dict(RUNTIME_REPORT, search={"objective": "size", "budgetSeconds": 600, "candidates": 4, "tried": 3,
                                          "winner": winner}, searchCandidates=[{"sparsity": 0.0}])
    spec = md(version=2, optimization={"search": {"sparsities": [0, 0.5], "modes": ["dynamic", "int8"]},
                                       "dataset": {"uri": "s3://models/d.npz"},
                                       "outputUri": "s3://models/digits/optimized"}, serving={"runtime": "auto"})
    plan = checked(spec, observe(job=JobView(name=job_name(spec), state="succeeded", report=report)))
    assert plan.status["optimization"]["search"] == {"objective": "size", "candidates": 4, "tried": 3,
                                                      "winner": winner}
    # tflite measured faster (0.2 ms against 2.0), but the search's objective chose the SavedModel.
    assert plan.target.runtime == "tensorflow"
    assert plan.status["serving"]["runtimeReason"] == "auto: tensorflow, the artefact that won the search " \
                                                      "(objective size)"


@pytest.mark.parametrize("onnx, expected", [
    ({"file": "model.onnx", "bytes": 609158, "compressedBytes": 470585, "agreement": 0.96, "latencyMsB1": 0.034,
      "savedModelAgreement": 1.0, "opset": 17},
     {"bytes": 609158, "compressedBytes": 470585, "agreement": 0.96, "savedModelAgreement": 1.0, "latencyMs": 0.034}),
    ({"skipped": "tf2onnx cannot convert the TensorFlow op(s) Igamma to ONNX opset 17"},
     {"skipped": "tf2onnx cannot convert the TensorFlow op(s) Igamma to ONNX opset 17"})])
def test_onnx_beside_the_version_is_reported_and_never_fails_it(onnx, expected):
    spec = md(version=2, optimization=dict(OPT, export={"onnx": True}))
    plan = checked(spec, observe(job=JobView(name=job_name(spec), state="succeeded", report=dict(REPORT, onnx=onnx))))
    assert plan.status["optimization"]["onnx"] == expected and cond(plan, "Optimized")[0] == "True"


CURVE = [[1, 1.0, 1.5], [8, 2.0, 3.0], [32, 6.0, 9.0], [64, 14.0, 20.0]]


@pytest.mark.parametrize("budget, size, timeout", [(100, 32, 6000), (10, 8, 2000), (2, 0, None)])
def test_batching_auto_chooses_from_the_curve_of_the_runtime_that_serves(budget, size, timeout):
    report = dict(RUNTIME_REPORT, batchCurve={"tensorflow": CURVE, "tflite": [[1, 0.1, 0.1]]})
    spec = md(version=2, optimization=OPT, serving={"batching": {"auto": True, "maxLatencyMs": budget}})
    plan = checked(spec, observe(job=JobView(name=job_name(spec), state="succeeded", report=report)))
    chosen = plan.status["serving"]["batching"]
    assert chosen["maxBatchSize"] == size and chosen["maxLatencyMs"] == budget
    assert plan.status["optimization"]["runtimes"]["tensorflow"]["batchCurve"][2] == \
        {"batchSize": 32, "latencyMs": 6.0, "latencyP99Ms": 9.0}
    data = config.config_data(plan.serving)
    args = build_deployment(plan.serving, plan.target)["spec"]["template"]["spec"]["containers"][0]["args"]
    if size:
        assert f"max_batch_size {{ value: {size} }}" in data["batching.config"]
        assert f"batch_timeout_micros {{ value: {timeout} }}" in data["batching.config"]
        assert "--enable_batching=true" in args
    else:   # nothing fits the budget: batching off, and status says why
        assert "batching.config" not in data and "--enable_batching=true" not in args
        assert "no measured batch size fits maxLatencyMs 2" in chosen["message"]


def test_tflite_for_a_version_published_without_model_tflite_keeps_what_serves_and_stalls():
    report = dict(RUNTIME_REPORT, download={"sourceCompressedBytes": 1000,
                                            "runtimes": {"tensorflow": _pulled(400, 2.5)}})
    spec = md(version=2, optimization=OPT, serving={"runtime": "tflite"})
    plan = checked(spec, observe(job=JobView(name=job_name(spec), state="succeeded", report=report)))
    status, reason, message = cond(plan, "Optimized")
    assert (status, reason) == ("False", "RuntimeUnavailable") and "runtime tensorflow" in message
    assert cond(plan, "Stalled")[:2] == ("True", "RuntimeUnavailable")
    assert plan.target is None and not plan.create_job


# ------------------------------------------------------------------------------------------------ rollback

def _serving_v1_then_v2(failure_threshold=2, rollback=True, image2=None):
    serving_spec = {"image": image2} if image2 else {}
    spec1 = md(version=1, monitoring={"failureThreshold": failure_threshold, "rollback": rollback})
    spec2 = md(version=2, generation=2, serving=serving_spec,
               monitoring={"failureThreshold": failure_threshold, "rollback": rollback})
    dep1 = deployment_view(deployment(spec1))
    good = dc.decide(spec1, observe(dc.decide(spec1, observe()).status, deployment=dep1, pods=(pod("a", 1),))).status
    assert good["model"]["lastGoodVersion"] == 1
    return spec1, spec2, good


CRASH = dict(waiting="CrashLoopBackOff", last={"exitCode": 1, "reason": "Error"}, restarts=3, ready=False)


def test_crash_loop_of_new_version_rolls_back_after_threshold():
    spec1, spec2, good = _serving_v1_then_v2()
    plan = checked(spec2, observe(good, generation=2, deployment=deployment_view(deployment(spec1)),
                                  pods=(pod("a", 1),)), generation=2)
    assert plan.target == serving(spec2) and ("Normal", "RolloutStarted",
                                              "rolling out version 2 (tensorflow/serving:2.21.0)") in plan.events
    rolling = deployment_view(deployment(spec2, ready=1, updated=1, available=1, old=1,
                                         progressing=("True", "ReplicaSetUpdated", "")))
    pods = (pod("a", 1), pod("b", 2, **CRASH))
    status = plan.status
    for check in (1, 2):
        plan = dc.decide(spec2, observe(status, generation=2, deployment=rolling, pods=pods, interval_check=True))
        status = plan.status
        if check == 1:
            assert not plan.rolled_back and status["health"]["consecutiveFailures"] == 1
            assert cond(plan, "Degraded")[:2] == ("True", "CrashLoopBackOff")
            assert cond(plan, "Reconciling")[:2] == ("True", "CrashLoopBackOff")
    assert plan.rolled_back and plan.target == serving(spec1, 1)
    stalled = cond(plan, "Stalled")
    assert stalled[:2] == ("True", "RolledBack") and "rolled back to version 1" in stalled[2]
    assert "CrashLoopBackOff" in stalled[2] and cond(plan, "Degraded")[:2] == ("True", "RolledBack")
    assert status["rollback"]["count"] == 1 and status["rollback"]["fromVersion"] == 2
    assert status["model"]["failedVersion"] == 2 and status["model"]["lastGoodVersion"] == 1
    assert [e[:2] for e in plan.events] == [("Warning", "RolledBack")]
    # The rollback completes: Ready=True on version 1 with Degraded and Stalled (kstatus: rolled back).
    back = deployment_view(deployment(spec2, serving(spec1, 1)))
    done = checked(spec2, observe(status, generation=2, deployment=back, pods=(pod("a", 1),)), generation=2)
    assert done.target == serving(spec1, 1) and not done.rolled_back
    assert cond(done, "Ready")[0] == "True" and "rolled back from version 2" in cond(done, "Ready")[2]
    assert cond(done, "Stalled")[:2] == ("True", "RolledBack") and cond(done, "Degraded")[0] == "True"
    assert done.status["rollback"]["count"] == 1 and done.status["phase"] == "Failed"
    # A spec change (generation 3) retries version 2.
    retry = dc.decide(spec2, observe(done.status, generation=3, deployment=back, pods=(pod("a", 1),)))
    assert retry.target == serving(spec2) and cond(retry, "Stalled")[0] == "False"


def test_new_version_that_tf_serving_reports_failed_rolls_back_with_its_message():
    """Pods Ready (the REST port answers), but TF Serving reports the new version END with an error."""
    spec1, spec2, good = _serving_v1_then_v2()
    rolled = deployment_view(deployment(spec2))
    status = checked(spec2, observe(good, generation=2, deployment=deployment_view(deployment(spec1)),
                                    pods=(pod("a", 1),)), generation=2).status
    error = "INTERNAL: the version was unloaded after a failed reload"
    for check in (1, 2):
        plan = checked(spec2, observe(status, generation=2, deployment=rolled, pods=(pod("b", 2),),
                                      model_state="END", model_message=error, interval_check=True), generation=2)
        status = plan.status
        if check == 1:
            assert not plan.rolled_back and cond(plan, "Available")[:2] == ("False", "ModelNotAvailable")
            assert cond(plan, "Available")[2].endswith(f"TF Serving reports the model END: {error}")
    assert plan.rolled_back and plan.target == serving(spec1, 1)
    assert status["rollback"]["lastReason"] == "ModelNotAvailable" and error in status["rollback"]["lastMessage"]


def test_progress_deadline_rolls_back_at_once_with_image_of_last_good():
    spec1, spec2, good = _serving_v1_then_v2(image2="tensorflow/serving:crashloop")
    stuck = deployment_view(deployment(spec2, ready=1, updated=1, available=1, old=1,
                                       progressing=("False", "ProgressDeadlineExceeded", "timed out")))
    plan = dc.decide(spec2, observe(good, generation=2, deployment=stuck, pods=(pod("a", 1),)))
    assert plan.rolled_back and plan.target == ServingTarget(1, "tensorflow/serving:2.21.0", "s3://models/digits/base")
    assert plan.status["rollback"]["lastReason"] == "ProgressDeadlineExceeded"


def test_rollback_target_image_from_the_service_annotation_when_status_cannot_hold_it():
    from modeldeploy.controller.observe import recorded_last_good
    from modeldeploy.resources.service import build_service
    spec1, spec2, good = _serving_v1_then_v2(image2="tensorflow/serving:crashloop")
    good = dict(good, model={k: v for k, v in good["model"].items() if k not in ("lastGoodImage", "lastGoodUri")})
    live = deployment_view(deployment(spec2, ready=1, updated=1, available=1, old=1,
                                      progressing=("False", "ProgressDeadlineExceeded", "timed out")))
    plan = dc.decide(spec2, observe(good, generation=2, deployment=live, pods=(pod("a", 1),)))
    assert plan.rolled_back and plan.target.image == "tensorflow/serving:crashloop"   # nothing recorded: spec's
    service = build_service(spec2, serving(spec1, 1))
    assert service["metadata"]["annotations"]["modeldeploy.io/last-good"] == \
        '{"image":"tensorflow/serving:2.21.0","runtime":"tensorflow","uri":"s3://models/digits/base","version":1}'
    plan = dc.decide(spec2, observe(good, generation=2, deployment=live, pods=(pod("a", 1),),
                                    recorded_last_good=recorded_last_good(service)))
    assert plan.rolled_back and plan.target == serving(spec1, 1) and plan.last_good == serving(spec1, 1)


def test_rollback_disabled_keeps_new_version_and_stalls():
    spec1, spec2, good = _serving_v1_then_v2(rollback=False)
    stuck = deployment_view(deployment(spec2, ready=1, updated=1, available=1, old=1,
                                       progressing=("False", "ProgressDeadlineExceeded", "timed out")))
    plan = checked(spec2, observe(good, generation=2, deployment=stuck, pods=(pod("a", 1),)), generation=2)
    assert not plan.rolled_back and plan.target == serving(spec2)
    assert cond(plan, "Stalled")[:2] == ("True", "ProgressDeadlineExceeded")
    assert "monitoring.rollback is false" in cond(plan, "Stalled")[2]
    assert cond(plan, "Degraded")[0] == "True" and cond(plan, "Ready")[0] == "False"


def test_established_version_crashing_is_degraded_not_rolled_back():
    spec1, _, good = _serving_v1_then_v2()
    dep = deployment_view(deployment(spec1, replicas=2, ready=1, available=1))
    pods = (pod("a", 1), pod("b", 1, waiting="CrashLoopBackOff", last={"exitCode": 137, "reason": "OOMKilled"},
                                  ready=False))
    status = good
    for _ in range(4):
        plan = dc.decide(spec1, observe(status, deployment=dep, pods=pods, interval_check=True))
        status = plan.status
    assert not plan.rolled_back and cond(plan, "Stalled")[0] == "False"
    assert cond(plan, "Degraded")[:2] == ("True", "OOMKilled") and "raise its memory limit" in cond(plan, "Degraded")[2]
    assert status["health"]["state"] == "Unhealthy"


def test_invalid_spec_status():
    status = dc.invalid_spec_status({}, 3, specmod.SpecError("spec.autoscaling.maxReplicas", "must be >= 2"), NOW)
    body = {"metadata": {"generation": 3}, "status": status}
    assert check_kstatus(body, settled=True) == []
    c = get_condition(status["conditions"], "Stalled")
    assert (c["status"], c["reason"]) == ("True", "InvalidSpec") and "spec.autoscaling.maxReplicas" in c["message"]


def test_name_conflict_status_stalls_with_the_objects_name_and_keeps_the_rest():
    from modeldeploy.controller.apply import NameConflict
    err = NameConflict("Service", "ml", "digits", {"metadata": {"ownerReferences": [
        {"kind": "Deployment", "name": "web", "controller": True, "uid": "x"}]}})
    assert str(err).startswith("Service ml/digits already exists and is controlled by Deployment web")
    status = dc.stalled_status({"observedGeneration": 4, "model": {"servingVersion": 1}}, 4, "NameConflict",
                               str(err), NOW)
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Stalled"]["status"] == "True" and conds["Stalled"]["reason"] == "NameConflict"
    assert conds["Ready"]["status"] == "False" and conds["Reconciling"]["status"] == "False"
    assert status["model"] == {"servingVersion": 1} and status["observedGeneration"] == 4
    assert check_kstatus({"metadata": {"generation": 4}, "status": status}, settled=True) == []
    assert dc.condition_reason(status, "Stalled") == "NameConflict"
    assert dc.condition_reason(status, "Ready") is None
    # A retry later fails the same way: decide planned Stalled=False anew, the old transition times stay.
    planned = {"observedGeneration": 4, "conditions": [
        {"type": "Stalled", "status": "False", "reason": "Progressing", "message": "", "observedGeneration": 4,
         "lastTransitionTime": "2030-01-01T00:00:00Z"}]}
    again = dc.stalled_status(planned, 4, "NameConflict", str(err), "2030-01-01T00:00:00Z", prev=status)
    assert sorted(again["conditions"], key=str) == sorted(status["conditions"], key=str)
