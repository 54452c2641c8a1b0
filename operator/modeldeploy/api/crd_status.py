"""The CRD's schema of `.status`: written by the operator only, so it has no parser; this is its one declaration
(the CRD and docs/api.md are generated from it, and the reconciler prunes what it writes against it)."""
from __future__ import annotations

from modeldeploy.api import limits as L
from modeldeploy.api.openapi import array, integer, number, obj, raw_object, string

# status: complete, because the API server prunes whatever the schema does not list.

def _i64(description: str) -> dict:
    return integer(description, minimum=0, fmt="int64")


def _i32(description: str) -> dict:
    return integer(description, minimum=0, fmt="int32")


def _ts(description: str) -> dict:
    return string(description, fmt="date-time")


def status_schema() -> dict:
    """The OpenAPI schema of .status (written by the operator only). Its default, observedGeneration 0, is what
    the API server shows of an object the operator has not handled yet (a create drops any status; the default
    fills it in on every read): generation 1 against 0 is InProgress for kstatus and Progressing for Argo CD,
    where no status at all would read as Current (done) to Flux while a burst of creates waits its turn."""
    return obj(
        "Observed state, written by the operator only. kstatus-compatible: observedGeneration and the "
        "conditions Ready, Reconciling and Stalled are the contract; phase is a summary for humans. "
        "observedGeneration 0: the operator has not handled the object yet.", {
            "observedGeneration": _i64("metadata.generation of the spec last handled."),
            "phase": string("Pending, Optimizing, Deploying, Ready, Degraded or Failed."),
            "conditions": {"type": "array", "description": "Conditions in the metav1.Condition shape.",
                           "items": _condition(), "x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["type"]},
            "selector": string("Label selector of the serving pods (for the scale subresource and HPAs)."),
            "model": _model(), "optimization": _optimization(), "serving": _serving(), "rollback": _rollback(),
            "health": _health(), "rollout": _rollout(),
            "kopf": raw_object("Reserved for the Kopf framework's bookkeeping (the operator keeps it in "
                               "annotations; this normally stays empty)."),
        }, default={"observedGeneration": 0})


def _condition() -> dict:
    """status.conditions[]: the metav1.Condition shape."""
    return obj("A condition in the metav1.Condition shape.", {
        "type": string("Ready, Optimized, Available, Reconciling, Stalled or Degraded.", max_length=316),
        "status": string("True, False or Unknown.", enum=("True", "False", "Unknown")),
        "reason": string("CamelCase reason a program can match on.", max_length=1024),
        "message": string("What happened, for humans.", max_length=32768),
        "observedGeneration": _i64("metadata.generation the condition was computed for."),
        "lastTransitionTime": _ts("When status last changed."),
    }, required=["type", "status", "lastTransitionTime", "reason", "message"])


def _model() -> dict:
    """status.model: the versions requested, serving, last good and failed."""
    return obj("Model versions.", {
        "requestedVersion": _i64("spec.model.version as last handled."),
        "servingVersion": _i64("Version the serving Deployment runs."),
        "lastGoodVersion": _i64("Last version that completed a rollout and passed health checks; the rollback "
                                "target."),
        "failedVersion": _i64("Last version whose optimization or rollout failed (not retried until the spec "
                              "changes)."),
        "uri": string("Storage location of the serving version."),
        "lastGoodImage": string("TF Serving image that served lastGoodVersion (restored by a rollback)."),
        "lastGoodUri": string("Storage location lastGoodVersion was pulled from (restored by a rollback)."),
        "lastGoodRuntime": string("Runtime (tensorflow or tflite) lastGoodVersion served with (restored by a "
                                  "rollback)."),
    })


def _optimization() -> dict:
    """status.optimization: the last optimizer Job and its report's figures."""
    return obj("The last optimization: its Job and the report's figures.", {
        "job": string("Name of the optimizer Job."),
        "version": _i64("Model version the Job optimized."),
        "hash": string("Hash of the optimization spec in the Job name."),
        "startTime": _ts("When the Job started."),
        "completionTime": _ts("When the Job finished."),
        "originalBytes": _i64("Bytes on disk of the model as stored at spec.model.uri."),
        "optimizedBytes": _i64("Bytes on disk a serving pod pulls: the files of the runtime that serves "
                               "(latencyRuntime), warmup records included."),
        "originalCompressedBytes": _i64("gzip bytes of the model as stored at spec.model.uri."),
        "compressedBytes": _i64("gzip bytes a serving pod pulls (the files of latencyRuntime)."),
        "compressionRatio": number("originalCompressedBytes / compressedBytes: how much less a serving pod "
                                   "downloads than the model as it was stored."),
        "sparsity": number("Fraction of zero weights measured on the exported model."),
        "metric": string("Quality metric: accuracy (classifiers) or mse (regressors)."),
        "baselineAccuracy": number("Metric of the original model on the validation split."),
        "optimizedAccuracy": number("Metric of the optimized artefact that serves on the validation split."),
        "accuracyDrop": number("baselineAccuracy - optimizedAccuracy (for mse: the increase)."),
        "baselineLatencyMs": number("CPU latency of the original model at batch 1, milliseconds."),
        "optimizedLatencyMs": number("p50 CPU latency of the artefact that serves at batch 1, milliseconds, in "
                                     "its runtime (latencyRuntime) with latencyThreads threads."),
        "baselineLatencyB32Ms": number("CPU latency of the original model at batch 32, milliseconds."),
        "optimizedLatencyB32Ms": number("p50 CPU latency of the artefact that serves at batch 32, milliseconds."),
        "baselineLatencyP99Ms": number("99th percentile CPU latency of the original model at batch 1, ms."),
        "optimizedLatencyP99Ms": number("p99 CPU latency of the artefact that serves at batch 1, milliseconds."),
        "baselineThroughput": number("Rows per second of the original model at batch 32 (one caller)."),
        "optimizedThroughput": number("Rows per second of the artefact that serves at batch 32 (one caller)."),
        "latencyRuntime": string("The runtime that serves (tensorflow-gpu: the float16-compute SavedModel of GPU "
                                 "pods), whose artefact the optimized*, "
                                 "compressedBytes and compressionRatio figures describe."),
        "latencyThreads": _i64("TensorFlow intra- and inter-op threads of the latency runs: the serving pod's "
                               "(its CPU limit, else request), as TF Serving is started with."),
        "runtimes": _optimization_runtimes(),
        "quantization": string("Quantization mode applied."),
        "onnx": _onnx(),
        "search": _search(),
        "uri": string("Where the optimized version was published."),
        "message": string("Outcome in words (why a gate or the Job failed)."),
    })


def _runtime_figures() -> dict:
    """The figures of one runtime's artefact (status.optimization.runtimes.*)."""
    return {
        "latencyMs": number("p50 latency at batch 1, milliseconds."),
        "latencyP99Ms": number("p99 latency at batch 1, milliseconds."),
        "latencyB32Ms": number("p50 latency at batch 32, milliseconds."),
        "throughput": number("Rows per second at batch 32 (one caller)."),
        "accuracy": number("Metric of this artefact on the validation split."),
        "accuracyDrop": number("Metric lost against the original (for mse: the relative increase)."),
        "compressionRatio": number("originalCompressedBytes / compressedBytes: how much less a pod with this "
                                   "runtime downloads than the model as it was stored."),
        "compressedBytes": _i64("gzip bytes a serving pod with this runtime pulls (warmup records included)."),
        "bytes": _i64("Bytes on disk a serving pod with this runtime pulls."),
        "batchCurve": array("Latency of this artefact per batch size, measured in the optimizer Job with "
                            "latencyThreads threads (what batching.auto chooses from).", obj("One batch size.", {
                                "batchSize": _i64("Rows per call."),
                                "latencyMs": number("p50 milliseconds per call."),
                                "latencyP99Ms": number("p99 milliseconds per call.")}), max_items=16),
    }


def _optimization_runtimes() -> dict:
    """status.optimization.runtimes: the figures of each runtime (one dict shared by all)."""
    figures = _runtime_figures()
    per_runtime = {name: obj(f"Figures of the {name} artefact.", figures) for name in L.ARTEFACT_RUNTIMES}
    per_runtime["tensorflow-gpu"] = obj(
        "Figures of the SavedModel computing in float16 that GPU pods pull (quantization float16): accuracy and "
        "bytes, no latency (measured on a GPU only).", figures)
    return obj("The figures of each runtime the version can be served with; those of the runtime that serves "
               "(latencyRuntime) are also the optimized* and size fields above.", per_runtime)


def _onnx() -> dict:
    """status.optimization.onnx."""
    return obj("model.onnx beside the version (spec.optimization.export.onnx).", {
        "bytes": _i64("Size of model.onnx."),
        "compressedBytes": _i64("gzip size of model.onnx."),
        "agreement": number("Share of validation rows where it answers as the float32 original."),
        "savedModelAgreement": number("Share of validation rows where it answers as the SavedModel it was "
                                      "converted from (the conversion's own error)."),
        "latencyMs": number("p50 latency at batch 1 in onnxruntime, milliseconds, with latencyThreads."),
        "skipped": string("Why it was not published (the conversion or its check failed)."),
    })


def _search() -> dict:
    """status.optimization.search: what the search chose."""
    return obj("What spec.optimization.search chose (report.json beside the model keeps every candidate's "
               "figures and why it lost).", {
                   "objective": string("size or latency."),
                   "candidates": _i64("Sparsity x mode combinations in the search."),
                   "tried": _i64("Candidates run within the time budget."),
                   "winner": obj("The published candidate.", {
                       "sparsity": number("Its pruning sparsity."),
                       "mode": string("Its quantization mode."),
                       "runtime": string("Its artefact's runtime (what runtime auto serves)."),
                   }),
               })


def _serving() -> dict:
    """status.serving: the serving Deployment and Service."""
    return obj("The serving Deployment and Service.", {
        "deployment": string("Name of the Deployment."),
        "service": string("Name of the Service."),
        "image": string("TF Serving image in use."),
        "runtime": string("What TF Serving runs: tensorflow (the SavedModel) or tflite (model.tflite)."),
        "runtimeReason": string("Why: spec.serving.runtime, or what runtime auto compared."),
        "batching": _batching(),
        "version": _i64("Model version of the Deployment's pod template."),
        "replicas": _i32("Current replicas (the scale subresource's status)."),
        "readyReplicas": _i32("Ready replicas."),
        "updatedReplicas": _i32("Replicas on the current pod template."),
        "availableReplicas": _i32("Available replicas."),
        "restUrl": string("In-cluster REST URL of the model."),
        "grpcAddress": string("In-cluster gRPC host:port."),
        "metrics": _serving_metrics(),
    })


def _batching() -> dict:
    """status.serving.batching: what batching.auto chose."""
    return obj("The batching TF Serving runs with, when spec.serving.batching.auto chose it.", {
        "maxBatchSize": _i64("Chosen max_batch_size (0: no batch size fits maxLatencyMs; batching is off)."),
        "batchTimeoutMicros": _i64("Chosen batch_timeout_micros."),
        "expectedLatencyMs": number("Worst case per request: the timeout plus the batch's measured p99."),
        "throughput": number("Rows per second of one batch thread at maxBatchSize, as measured."),
        "maxLatencyMs": _i64("The budget it was chosen within (spec.serving.batching.maxLatencyMs)."),
        "message": string("The choice in words, with the measurements it compared."),
    })


def _serving_metrics() -> dict:
    """status.serving.metrics: TF Serving's own figures against the SLO."""
    return obj(
        "What TF Serving's own metrics show for the serving version over spec.monitoring.slo.windowSeconds, "
        "summed over its ready pods (only with spec.monitoring.slo). Rewritten only when a figure moves by "
        "more than 10% (and more than a small absolute step), the pods scraped or the SLO state change, so "
        "an idle model costs no writes.", {
            "version": _i64("Model version the figures were measured on."),
            "requestsPerSecond": number("Requests per second (every status), from "
                                        ":tensorflow:serving:request_count.", minimum=0),
            "errorRatio": number("Share of requests answered with a server-side error.", minimum=0),
            "p50Ms": number("Median request latency, milliseconds (interpolated within TF Serving's "
                            "histogram buckets); absent without requests.", minimum=0),
            "p99Ms": number("99th-percentile request latency, milliseconds; absent without requests.",
                            minimum=0),
            "windowSeconds": number("Seconds the figures really cover (scrapes are one monitor interval "
                                    "apart).", minimum=0),
            "pods": _i64("Serving pods whose metrics were read."),
            "slo": string("Met, Violated or NoVerdict (fewer requests than minRequestsPerSecond, or none)."),
            "sloTransitionTime": _ts("When slo last changed; it changes at most once per window."),
            "measureTime": _ts("When these figures were measured."),
            "message": string("The figures against the bounds, in words."),
        })


def _rollback() -> dict:
    """status.rollback: automatic rollbacks."""
    return obj("Automatic rollbacks.", {
        "count": _i64("Rollbacks so far."),
        "fromVersion": _i64("Version rolled back from, last time."),
        "toVersion": _i64("Version rolled back to, last time."),
        "lastReason": string("Reason of the last rollback."),
        "lastMessage": string("Details of the last rollback."),
        "lastTime": _ts("When the last rollback happened."),
    })


def _health() -> dict:
    """status.health: the monitor's last check."""
    return obj("The monitor's last health check.", {
        "state": string("Healthy, Unhealthy or Unknown."),
        "consecutiveFailures": _i64("Failed checks in a row."),
        "lastCheckTime": _ts("When the monitor last checked (written only when the state changes)."),
        "lastTransitionTime": _ts("When the state last changed."),
        "message": string("Findings of the last check."),
        "modelState": string("TF Serving's model version state (AVAILABLE, LOADING, ...), when reachable."),
        "restarts": _i64("Container restarts summed over serving pods."),
    })


def _rollout() -> dict:
    """status.rollout: the canary rollout."""
    return obj(
        "The canary rollout (spec.rollout.strategy canary): written while a canary runs, and kept after it was "
        "promoted or rolled back until the next one starts.", {
            "strategy": string("The strategy the rollout ran with (canary)."),
            "phase": string("Progressing (on a step), Holding (the step's duration passed without a verdict: "
                            "too little traffic; the step holds until traffic gives one), Promoted (the serving "
                            "Deployment rolls to the canary's version) or RolledBack (the canary was removed)."),
            "step": _i32("The current step, from 1."),
            "steps": _i32("Steps in spec.rollout.steps."),
            "weight": _i32("The step's weight: percent of the replicas the canary runs."),
            "canaryReplicas": _i32("Replicas of the canary Deployment in this step."),
            "stableReplicas": _i32("Replicas of the stable Deployment in this step (absent with autoscaling: "
                                   "the HPA sizes it)."),
            "canaryVersion": _i64("Model version of the canary."),
            "stableVersion": _i64("Model version the stable Deployment serves (status.model.lastGoodVersion)."),
            "stepStartTime": _ts("When the current step started (its duration counts from here)."),
            "failedChecks": _i32("Consecutive interval checks with failing canary pods (rolled back at "
                                 "spec.monitoring.failureThreshold)."),
            "message": string("The last judgment in words: the canary's and the stable version's figures "
                              "against the SLO and the margins."),
        })
