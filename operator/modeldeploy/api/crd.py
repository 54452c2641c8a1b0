"""The ModelDeployment CustomResourceDefinition, described once in Python and written to crds/ and docs/api.md.

`python -m modeldeploy.api.crd` rewrites crds/modeldeploy.io_modeldeployments.yaml and docs/api.md;
tests/unit/test_schema_sync.py fails when the committed files differ from `crd()` or when the schema and the
dataclasses in spec.py disagree (fields, defaults, bounds, enums).

Decisions recorded in the schema's own descriptions (so `kubectl explain` shows them):
- Unknown fields are pruned by the structural schema (the Kubernetes default), and rejected with the field's
  name by every client that asks for strict field validation: kubectl (strict by default since 1.27), Helm 3
  with server-side apply, Flux and Argo CD with server-side apply. So a misspelt field fails loudly at apply.
- A `spec.model.version` lower than the version serving is a manual rollback and is allowed.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import yaml

from modeldeploy.api import quantity
from modeldeploy.api import spec as S

CRD_NAME = f"{S.PLURAL}.{S.API_GROUP}"
CRD_FILE = Path("crds") / f"{S.API_GROUP}_{S.PLURAL}.yaml"
DOC_FILE = Path("docs") / "api.md"
MAX_LIST = 64  # list bounds keep CEL's cost estimate within the API server's budget


# --------------------------------------------------------------------------------------------------------------
# Small schema builders; every one takes the description first so none is forgotten.

def obj(description: str, properties: dict, *, required=(), default=None, rules=()) -> dict:
    s = {"type": "object", "description": description, "properties": properties}
    if required:
        s["required"] = list(required)
    if default is not None:
        s["default"] = default
    if rules:
        s["x-kubernetes-validations"] = list(rules)
    return s


def integer(description: str, *, default=None, minimum=None, maximum=None, fmt=None) -> dict:
    s = {"type": "integer", "description": description}
    if fmt:
        s["format"] = fmt
    if default is not None:
        s["default"] = default
    if minimum is not None:
        s["minimum"] = minimum
    if maximum is not None:
        s["maximum"] = maximum
    return s


def number(description: str, *, default=None, minimum=None, maximum=None, exclusive=False) -> dict:
    s = {"type": "number", "description": description}
    if default is not None:
        s["default"] = default
    if minimum is not None:
        s["minimum"] = minimum
        if exclusive:
            s["exclusiveMinimum"] = True
    if maximum is not None:
        s["maximum"] = maximum
        if exclusive:
            s["exclusiveMaximum"] = True
    return s


def string(description: str, *, default=None, enum=None, max_length=None, rules=(), fmt=None) -> dict:
    s = {"type": "string", "description": description}
    if fmt:
        s["format"] = fmt
    if default is not None:
        s["default"] = default
    if enum:
        s["enum"] = list(enum)
    if max_length is not None:
        s["maxLength"] = max_length
    if rules:
        s["x-kubernetes-validations"] = list(rules)
    return s


def boolean(description: str, *, default=None) -> dict:
    s = {"type": "boolean", "description": description}
    if default is not None:
        s["default"] = default
    return s


def rule(rule_: str, message: str, *, message_expression: str = "", field_path: str = "",
         reason: str = "FieldValueInvalid") -> dict:
    r = {"rule": rule_}
    if message:
        r["message"] = message
    if message_expression:
        r["messageExpression"] = message_expression
    if field_path:
        r["fieldPath"] = field_path
    r["reason"] = reason
    return r


def _overlaps_cel(a: str, b: str) -> str:
    """CEL for spec.overlaps(a, b): one location is the other or lies inside it (URIs have no '//')."""
    def slash(x):
        return f"({x}.endsWith('/') ? {x} : {x} + '/')"
    return f"({slash(a)}.startsWith({slash(b)}) || {slash(b)}.startsWith({slash(a)}))"


def uri(description: str, field: str) -> dict:
    """A storage URI: scheme checked by CEL so the error says which schemes work."""
    return string(description, max_length=S.MAX_URI_LENGTH, rules=[
        rule(f"self.matches('{S.URI_PATTERN}')",
             f"{field} must be a URI with scheme s3://, gs://, pvc:// or file:/// (for example "
             f"s3://models/digits/base or file:///models/digits)"),
        rule("!self.contains('/../') && !self.endsWith('/..')", f"{field} must not contain '..' path segments"),
        rule(f"!self.matches('{S.FORBIDDEN_FILE_PATTERN}')",
             f"{field} is a system path (/proc, /sys, /dev, /run, /etc): use a storage URI or a file:/// path to "
             f"a model volume")])


def label_map(description: str, field: str) -> dict:
    """A node selector: label keys and values as the API server checks them on a pod."""
    return {"type": "object", "description": description, "maxProperties": MAX_LIST,
            "additionalProperties": {"type": "string", "maxLength": 63},
            "x-kubernetes-validations": [
                rule(f"self.all(k, size(k) <= 317 && k.matches('{S.LABEL_KEY_PATTERN}'))",
                     f"{field} keys must be label keys: [prefix/]name, the name at most 63 letters, digits, '-', "
                     f"'_' or '.'"),
                rule(f"self.all(k, self[k].matches('{S.LABEL_VALUE_PATTERN}'))",
                     f"{field} values must be label values: at most 63 letters, digits, '-', '_' or '.', starting "
                     f"and ending with a letter or digit")]}


def quantity_map(description: str) -> dict:
    return {"type": "object", "description": description, "additionalProperties": {
        "anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True,
        "pattern": quantity.PATTERN}}


def resources(description: str) -> dict:
    return obj(description, {
        "limits": quantity_map("Maximum amount of each resource (e.g. cpu: 2, memory: 4Gi)."),
        "requests": quantity_map("Amount of each resource the scheduler reserves (e.g. cpu: 500m, memory: 1Gi)."),
    })


def tolerations(description: str) -> dict:
    return {"type": "array", "description": description, "maxItems": MAX_LIST, "items": obj(
        "A Kubernetes Toleration.", {
            "key": string("Taint key the toleration applies to; empty with operator Exists matches every taint.",
                          max_length=317, rules=[rule(f"self == '' || self.matches('{S.LABEL_KEY_PATTERN}')",
                                                      "a toleration key must be a taint key: [prefix/]name")]),
            "operator": string("Exists or Equal (default Equal).", enum=S.TOLERATION_OPERATORS),
            "value": string("Taint value to match when operator is Equal.", max_length=63,
                            rules=[rule(f"self.matches('{S.LABEL_VALUE_PATTERN}')",
                                        "a toleration value must be a label value: at most 63 letters, digits, "
                                        "'-', '_' or '.'")]),
            "effect": string("Taint effect to match; empty matches all effects.",
                             enum=("",) + S.TOLERATION_EFFECTS),
            "tolerationSeconds": integer("For NoExecute: how long the pod stays bound after the taint appears.",
                                         fmt="int64"),
        })}


def raw_object(description: str) -> dict:
    return {"type": "object", "description": description, "x-kubernetes-preserve-unknown-fields": True}


# --------------------------------------------------------------------------------------------------------------
# spec

def spec_schema() -> dict:
    """The OpenAPI schema of .spec."""
    model = obj(
        "The trained model and the version to serve.", {
            "uri": uri("Where the trained model is: a SavedModel directory, or a Keras file (.keras, .h5), which "
                       "needs spec.optimization (TF Serving loads SavedModels only). "
                       "Schemes: s3://bucket/path, gs://bucket/path, pvc://<claim>/<path> (a PersistentVolumeClaim "
                       "in this namespace) or file:///path (a path inside the image).", "spec.model.uri"),
            "version": integer(
                "Model version to serve; becomes TF Serving's version directory. Raise it to optimize and roll "
                "out a new version. A version lower than status.model.servingVersion is a manual rollback and is "
                "allowed: that version is served again (optimized first when it is not published).",
                default=1, minimum=1, maximum=S.MAX_VERSION, fmt="int64"),
            "name": string(
                "Model name in TF Serving's URLs (/v1/models/<name>). A DNS-1123 label. Defaults to "
                "metadata.name.", max_length=S.MAX_NAME_LENGTH, rules=[rule(
                    f"self.matches('{S.DNS1123_LABEL}')",
                    "spec.model.name must be a DNS-1123 label: lower-case letters, digits and '-', starting and "
                    "ending with a letter or digit")]),
            "storageSecret": string(
                "Name of a Secret in this namespace whose keys become environment variables of the optimizer "
                "and the model puller (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION, "
                "or GOOGLE_APPLICATION_CREDENTIALS). Never copied into status, Events or logs.",
                max_length=253, rules=[rule(f"self.matches('{S.DNS1123_SUBDOMAIN}')",
                                            "spec.model.storageSecret must be the name of a Secret (a DNS-1123 "
                                            "subdomain)")]),
        }, required=["uri"])

    optimization = obj(
        "Optimize the model in a Job before serving it: pruning, quantization and gates. Leave it out to serve "
        "the model as it is (no Job). Each version is published once under <outputUri>/<version>/.", {
            "pruning": obj("Magnitude pruning (tensorflow-model-optimization) to a target sparsity.", {
                "sparsity": number("Fraction of weights set to zero, strictly between 0 and 1 (0.5 = half).",
                                   minimum=0, maximum=1, exclusive=True),
                "fineTuneEpochs": integer(
                    "Epochs of fine-tuning while pruning, on the dataset's x_train/y_train. 0 prunes without "
                    "training; more than 0 needs spec.optimization.dataset.", default=0, minimum=0, maximum=1000),
            }, required=["sparsity"]),
            "quantization": obj("Post-training or quantization-aware quantization.", {
                "mode": string(
                    "none: keep float32. dynamic: int8 weights, float activations (no data needed). float16: "
                    "half-precision weights, good on GPUs. int8: full integer, calibrated on the dataset. qat: "
                    "quantization-aware training on the dataset. int8 and qat need spec.optimization.dataset.",
                    default="dynamic", enum=S.QUANTIZATION_MODES),
                "fineTuneEpochs": integer(
                    "mode qat only: epochs of quantization-aware training (default 1). Combined with pruning, "
                    "one training run of the larger of the two epoch counts prunes and quantizes together.",
                    minimum=1, maximum=1000),
            }, rules=[rule("!has(self.fineTuneEpochs) || self.mode == 'qat'",
                           "spec.optimization.quantization.fineTuneEpochs applies to mode qat only",
                           field_path=".fineTuneEpochs", reason="FieldValueForbidden")]),
            "dataset": obj(
                "A NumPy .npz file with arrays x_train, y_train, x_val, y_val (validation alone suffices when "
                "nothing is trained). Used for fine-tuning, int8 calibration, QAT and the accuracy gate.", {
                    "uri": uri("Location of the .npz file (s3://, gs://, pvc:// or file://).",
                               "spec.optimization.dataset.uri"),
                }, required=["uri"]),
            "gates": obj("Quality gates: when one fails nothing is published and the serving version stays.", {
                "maxAccuracyDrop": number(
                    "Largest allowed drop of validation accuracy from the original to the optimized model, as a "
                    "fraction (0.01 = one percentage point). Needs spec.optimization.dataset. Unset: no gate.",
                    minimum=0, maximum=1),
                "minCompression": number(
                    "Smallest allowed compression ratio: gzip size of the original over gzip size of the "
                    "optimized model. Unset: no gate.", minimum=1, maximum=1000),
            }),
            "search": obj(
                "Accuracy-aware search instead of pruning and quantization: the Job optimizes the model once per "
                "sparsity x mode, measures each published artefact (SavedModel, and model.tflite where the mode "
                "makes one) in its runtime, and publishes the candidate that is best by objective among those "
                "passing the gates. report.json keeps the whole table; status.optimization.search names the "
                "winner. Candidates not started when timeBudgetSeconds has passed are listed as not tried.", {
                    "sparsities": {"type": "array", "minItems": 1, "maxItems": S.MAX_SEARCH_AXIS,
                                   "x-kubernetes-list-type": "set",
                                   "description": "Pruning sparsities to try, each in [0, 1) (0: no pruning).",
                                   "items": number("A sparsity.", minimum=0, maximum=1, exclusive=False)
                                   | {"exclusiveMaximum": True}},
                    "modes": {"type": "array", "minItems": 1, "maxItems": S.MAX_SEARCH_AXIS,
                              "x-kubernetes-list-type": "set",
                              "description": "Quantization modes to try (int8 and qat need the dataset).",
                              "items": string("A quantization mode.", enum=S.QUANTIZATION_MODES)},
                    "objective": string("What the winner is best at: size (gzip bytes a serving pod pulls) or "
                                        "latency (p50 at batch 1 in its runtime).", default="size",
                                        enum=S.SEARCH_OBJECTIVES),
                    "timeBudgetSeconds": integer("No candidate starts after this many seconds (the first always "
                                                 "runs). Below activeDeadlineSeconds.", default=1800, minimum=60,
                                                 maximum=86400),
                    "fineTuneEpochs": integer("Epochs of fine-tuning for each pruned candidate (and of QAT); "
                                              "needs the dataset.", default=0, minimum=0, maximum=1000),
                }, required=["sparsities", "modes"]),
            "export": obj("Artefacts published beside the SavedModel for teams that serve elsewhere; no TF "
                          "Serving pod pulls them.", {
                              "onnx": boolean("Also publish model.onnx (tf2onnx), checked in onnxruntime against "
                                              "the SavedModel; a failed conversion is a warning in the report "
                                              "and status.optimization.onnx, never a failed publish.",
                                              default=False),
                          }),
            "outputUri": uri("Where optimized versions are published, as <outputUri>/<version>/ (with "
                             "report.json). Must not overlap spec.model.uri or the dataset's URI.",
                             "spec.optimization.outputUri"),
            "resources": resources("CPU and memory for the optimizer Job's container."),
            "nodeSelector": label_map("Node labels the optimizer Job's pod must match.",
                                      "spec.optimization.nodeSelector"),
            "tolerations": tolerations("Tolerations of the optimizer Job's pod."),
            "backoffLimit": integer("Retries of the optimizer Job before it counts as failed.",
                                    default=1, minimum=0, maximum=20),
            "activeDeadlineSeconds": integer("Time limit of the optimizer Job, in seconds (at most a week).",
                                             default=7200, minimum=60, maximum=S.MAX_DEADLINE_SECONDS, fmt="int64"),
            "ttlSecondsAfterFinished": integer(
                "Delete the finished optimizer Job after this many seconds. Unset: the Job is kept (the "
                "ModelDeployment owns it, so deleting the ModelDeployment removes it). At most a year.", minimum=0,
                maximum=S.MAX_TTL_SECONDS),
        }, required=["outputUri"], rules=[
            rule("!has(self.quantization) || !has(self.quantization.mode) || "
                 "!(self.quantization.mode in ['int8', 'qat']) || has(self.dataset)",
                 "spec.optimization.quantization.mode int8 and qat need spec.optimization.dataset.uri",
                 message_expression="'spec.optimization.quantization.mode ' + self.quantization.mode + ' needs "
                                    "spec.optimization.dataset.uri (int8 calibrates on it, qat trains on it): add a "
                                    "dataset or use mode dynamic or float16'",
                 field_path=".quantization.mode"),
            rule("!has(self.pruning) || !has(self.pruning.fineTuneEpochs) || self.pruning.fineTuneEpochs == 0 "
                 "|| has(self.dataset)",
                 "spec.optimization.pruning.fineTuneEpochs > 0 needs spec.optimization.dataset.uri to train on: "
                 "add a dataset or set fineTuneEpochs: 0", field_path=".pruning.fineTuneEpochs"),
            rule("!has(self.search) || (!has(self.pruning) && !has(self.quantization))",
                 "spec.optimization.search " + S.SEARCH_REPLACES_MESSAGE, field_path=".search"),
            rule("!has(self.search) || has(self.dataset) || !self.search.modes.exists(m, m in ['int8', 'qat'])",
                 "spec.optimization.search.modes int8 and qat need spec.optimization.dataset.uri: add a dataset or "
                 "search modes dynamic, float16 and none only", field_path=".search.modes"),
            rule("!has(self.search) || has(self.dataset) || !has(self.search.fineTuneEpochs) || "
                 "self.search.fineTuneEpochs == 0",
                 "spec.optimization.search.fineTuneEpochs > 0 needs spec.optimization.dataset.uri to train on: "
                 "add a dataset or set fineTuneEpochs: 0", field_path=".search.fineTuneEpochs"),
            rule("!has(self.search) || self.search.timeBudgetSeconds < self.activeDeadlineSeconds",
                 "spec.optimization.search.timeBudgetSeconds must be below spec.optimization.activeDeadlineSeconds, "
                 "which ends the Job: lower the budget or raise the deadline",
                 field_path=".search.timeBudgetSeconds"),
            rule("!has(self.gates) || !has(self.gates.maxAccuracyDrop) || has(self.dataset)",
                 "spec.optimization.gates.maxAccuracyDrop needs spec.optimization.dataset.uri to measure accuracy: "
                 "add a dataset or remove the gate", field_path=".gates.maxAccuracyDrop"),
        ])

    serving = obj(
        "The TensorFlow Serving Deployment (gRPC on 8500, REST on 8501) and its Service.", {
            "image": string(
                f"TF Serving image. Empty: tensorflow/serving:{S.TF_SERVING_VERSION}, or the -gpu tag when gpus > "
                f"0 (the operator may be configured with mirrors).", max_length=512, rules=[rule(
                    f"self == '' || self.matches('{S.IMAGE_PATTERN}')",
                    "spec.serving.image must be an image reference such as tensorflow/serving:2.21.0 or "
                    "registry.example.com:5000/serving@sha256:<digest>")]),
            "replicas": integer(
                "Serving replicas (the scale subresource: kubectl scale changes this). Ignored while "
                "spec.autoscaling is set: the HorizontalPodAutoscaler owns the replica count then.",
                default=1, minimum=0, maximum=1000),
            "gpus": dict(integer(
                "GPUs per replica (limits nvidia.com/gpu): 0 or 1. 1 selects the -gpu image, adds a toleration "
                "for nvidia.com/gpu and the node selector nvidia.com/gpu.present=true unless you give your own. "
                "TF Serving places a model on one GPU, so scale out with replicas instead.",
                default=0, minimum=0), **{"x-kubernetes-validations": [rule(
                    f"self <= {S.MAX_GPUS}", f"spec.serving.gpus {S.GPUS_MESSAGE}")]}),
            "nodeSelector": label_map("Node labels the serving pods must match (replaces the GPU default).",
                                      "spec.serving.nodeSelector"),
            "tolerations": tolerations("Tolerations of the serving pods (replace the GPU default)."),
            "affinity": raw_object("A Kubernetes Affinity for the serving pods (node, pod and anti-affinity)."),
            "resources": resources("CPU and memory of the TF Serving container (GPUs come from spec.serving.gpus)."),
            "runtime": string(
                "What TF Serving runs: tensorflow (the SavedModel) or tflite (the model.tflite the optimizer "
                "publishes for quantization modes dynamic, int8 and qat: TF Serving's --prefer_tflite_model, CPU "
                "only, usually several times faster on CPU at small batches), or auto: the one that measured "
                "fastest at batch 1 in the optimizer Job and passed the gates (tensorflow when gpus > 0; needs "
                "spec.optimization). A serving pod pulls only its runtime's artefact.", default="tensorflow",
                enum=S.RUNTIMES),
            "batching": obj("Server-side batching in TF Serving. Leave it out to serve request by request.", {
                "maxBatchSize": integer("Largest batch TF Serving forms. TF Serving refuses a request with more "
                                        "rows (HTTP 400 'Task size N is larger than maximum input batch size'): "
                                        "clients split larger requests. Chosen instead when auto is true.",
                                        default=32, minimum=1, maximum=65536),
                "batchTimeoutMicros": integer("How long to wait to fill a batch, in microseconds. Chosen "
                                              "instead when auto is true.",
                                              default=2000, minimum=0, maximum=10_000_000),
                "maxEnqueuedBatches": integer("Queue length before requests are refused.",
                                              default=100, minimum=1, maximum=1_000_000),
                "numBatchThreads": integer("Threads that run batches in parallel.",
                                           default=4, minimum=1, maximum=1024),
                "auto": boolean("Choose maxBatchSize and batchTimeoutMicros from the latency the optimizer Job "
                                "measured per batch size in the runtime that serves: the most rows per second "
                                "whose worst case (the timeout plus the batch's p99) fits maxLatencyMs. Needs "
                                "spec.optimization; status.serving.batching shows the choice and the "
                                "measurements.", default=False),
                "maxLatencyMs": integer("Latency budget per request, in milliseconds, that auto chooses within "
                                        "(required with auto).", minimum=1, maximum=60_000),
            }, rules=[rule("!has(self.auto) || !self.auto || has(self.maxLatencyMs)",
                           "spec.serving.batching.maxLatencyMs: auto: true needs a latency budget to choose "
                           "within: set maxLatencyMs (milliseconds per request)", field_path=".maxLatencyMs")]),
        }, default={}, rules=[rule("!has(self.runtime) || self.runtime != 'tflite' || !has(self.gpus) || "
                                   "self.gpus == 0", "spec.serving.runtime " + S.TFLITE_GPU_MESSAGE,
                                   field_path=".runtime"),
                              rule("!has(self.batching) || !has(self.batching.auto) || !self.batching.auto || "
                                   "!has(self.gpus) || self.gpus == 0",
                                   "spec.serving.batching.auto " + S.BATCHING_AUTO_GPU_MESSAGE,
                                   field_path=".batching.auto")])

    metric_sources = {
        key: raw_object(f"The autoscaling/v2 {key} metric source (for type {key[0].upper() + key[1:]}).")
        for key in ("resource", "pods", "object", "external", "containerResource")}
    autoscaling = obj(
        "Scale the serving Deployment with an autoscaling/v2 HorizontalPodAutoscaler. Leave it out for a fixed "
        "spec.serving.replicas.", {
            "minReplicas": integer("Fewest replicas.", default=1, minimum=1, maximum=1000),
            "maxReplicas": integer("Most replicas; at least minReplicas.", minimum=1, maximum=1000),
            "targetCPUUtilization": integer(
                "Target average CPU utilization in percent of the CPU request. Used when metrics is empty.",
                default=70, minimum=1, maximum=1000),
            "metrics": {
                "type": "array", "maxItems": 10,
                "description": "autoscaling/v2 MetricSpec list used as it is; replaces the CPU target.",
                "items": obj("An autoscaling/v2 MetricSpec.", {
                    "type": string("Metric source type; the matching field (resource, pods, object, external, "
                                   "containerResource) must be set.", enum=S.METRIC_TYPES),
                    **metric_sources,
                }, required=["type"], rules=[rule(
                    "(self.type == 'Resource' && has(self.resource)) || (self.type == 'Pods' && has(self.pods)) "
                    "|| (self.type == 'Object' && has(self.object)) || (self.type == 'External' && "
                    "has(self.external)) || (self.type == 'ContainerResource' && has(self.containerResource))",
                    "spec.autoscaling.metrics: a metric needs the source field matching its type",
                    message_expression="'spec.autoscaling.metrics: a metric of type ' + self.type + "
                                           "' needs its matching source field (resource, pods, object, external "
                                           "or containerResource)'", reason="FieldValueRequired")]),
            },
        }, required=["maxReplicas"], rules=[rule(
            # A static message: the API server's cost estimate for string(int) in a messageExpression is unbounded.
            "self.maxReplicas >= self.minReplicas",
            "spec.autoscaling.maxReplicas must be greater than or equal to spec.autoscaling.minReplicas",
            field_path=".maxReplicas")])

    monitoring = obj("Health checks of the serving pods and of TF Serving's model status, and service-level "
                     "objectives from TF Serving's metrics.", {
        "intervalSeconds": integer("Seconds between health checks.", default=30, minimum=5, maximum=3600),
        "failureThreshold": integer("Consecutive failed checks of a new version before it is rolled back.",
                                    default=3, minimum=1, maximum=100),
        "prometheus": boolean("Enable TF Serving's Prometheus endpoint (/monitoring/prometheus/metrics on 8501) "
                              "and scrape annotations.", default=True),
        "rollback": boolean("Roll back to status.model.lastGoodVersion when a new version fails its rollout.",
                            default=True),
        "slo": obj(
            "Service-level objectives of the serving version, judged from TF Serving's own Prometheus metrics "
            "(:tensorflow:serving:request_count and :tensorflow:serving:request_latency), which the operator "
            "scrapes from each ready serving pod at every monitor interval and sums over the pods. The figures "
            "over the window go to status.serving.metrics (written only when they move materially); a violated "
            "bound sets Degraded=True with reason SLOViolated (Ready stays True: the model still answers), a "
            "Warning Event and the operator's modeldeploy_model_slo_violated metric. The verdict changes at most "
            "once per window, so it never flaps. A bound left out is not checked; with none, the figures are "
            "only reported. Needs prometheus: true.", {
                "maxP99LatencyMs": integer(
                    "Largest allowed 99th-percentile request latency over the window, in milliseconds, as TF "
                    "Serving measures it (interpolated within its histogram buckets, like Prometheus' "
                    "histogram_quantile; the buckets grow by 1.8x, so that is the resolution).",
                    minimum=1, maximum=S.MAX_SLO_LATENCY_MS),
                "maxErrorRatio": number(
                    "Largest allowed share of requests answered with a server-side error over the window (0.01 = "
                    "1%). Client errors (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE, CANCELLED) count as "
                    "requests, not as errors.", minimum=0, maximum=1),
                "minRequestsPerSecond": number(
                    "Below this many requests per second over the window no verdict is drawn (the SLO state is "
                    "NoVerdict): too few requests say nothing about a p99.",
                    default=S.SLOSpec.min_requests_per_second, minimum=0,
                    maximum=S.MAX_SLO_RATE),
                "windowSeconds": integer(
                    "The window the figures and the verdict cover, in seconds; at least intervalSeconds.",
                    default=S.SLOSpec.window_seconds, minimum=S.MIN_SLO_WINDOW, maximum=S.MAX_SLO_WINDOW),
            }),
    }, default={}, rules=[
        rule("!has(self.slo) || !has(self.prometheus) || self.prometheus",
             "spec.monitoring.slo " + S.SLO_NEEDS_PROMETHEUS_MESSAGE, field_path=".slo"),
        # Static message: string(int) in a messageExpression has an unbounded cost estimate.
        rule(f"!has(self.slo) || (has(self.slo.windowSeconds) ? self.slo.windowSeconds : "
             f"{S.SLOSpec.window_seconds}) >= (has(self.intervalSeconds) ? self.intervalSeconds : "
             f"{S.MonitoringSpec.interval_seconds})",
             "spec.monitoring.slo.windowSeconds must be >= spec.monitoring.intervalSeconds: " + S.SLO_WINDOW_MESSAGE,
             field_path=".slo.windowSeconds"),
    ])

    rollout = obj("How a new version rolls out.", {
        "progressDeadlineSeconds": integer("Seconds a rollout may take before it counts as failed (and is rolled "
                                           "back when spec.monitoring.rollback is true).",
                                           default=600, minimum=30, maximum=86400),
        "strategy": string(
            "rolling: the serving Deployment's rolling update replaces every pod (maxUnavailable 0). canary: a new "
            "version starts as a second Deployment (<name>-canary) behind the same Service, with a share of the "
            "replicas per step; the Service spreads connections over the ready endpoints of both, so the split "
            "is per connection (as kube-proxy's), not per request. Each step lasts durationSeconds and ends "
            "when the canary met spec.monitoring.slo and was no worse than the stable version by the margins "
            "below; after the last step the canary is promoted (the serving Deployment rolls to it and the "
            "canary Deployment goes). A broken bound or margin at any check rolls back at once: the canary is "
            "removed, the stable version keeps serving, and Stalled=True (reason RolledBack) carries the figures "
            "that failed. Below minRequestsPerSecond there is no verdict: the step waits, and past its duration "
            "holds (not proven, status.rollout.phase Holding) until traffic gives one. Needs "
            "spec.monitoring.slo, steps, and spec.serving.replicas >= 2 or spec.autoscaling.",
            default="rolling", enum=S.ROLLOUT_STRATEGIES),
        "steps": {"type": "array", "maxItems": S.MAX_CANARY_STEPS,
                  "description": "Canary steps, weights strictly increasing (used by strategy canary only). With "
                                 "fixed replicas the canary runs ceil(weight% x replicas) of them (at least 1, the "
                                 "stable version keeps the rest and at least 1, the total stays "
                                 "spec.serving.replicas); with autoscaling the HPA keeps sizing the stable "
                                 "Deployment and the canary gets enough replicas on top for its weight.",
                  "items": obj("One canary step.", {
                      "weight": integer("Percent of the replicas the canary runs in this step (1-99).",
                                        minimum=1, maximum=99),
                      "durationSeconds": integer(
                          "Seconds the step lasts at least; at least spec.monitoring.slo.windowSeconds, so its "
                          "verdict covers a window within the step.", minimum=S.MIN_STEP_SECONDS,
                          maximum=S.MAX_STEP_SECONDS),
                  }, required=["weight", "durationSeconds"])},
        "maxLatencyRatio": number(
            "Canary margin on latency: the canary's p99 must stay at or below the stable version's p99 times "
            "this (1.2: at most 20% slower), over the same window. Judged only while both have a verdict (at "
            "least minRequestsPerSecond each). TF Serving's histogram buckets grow by 1.8x and the quantiles are "
            "interpolated within them, so ratios close to 1 compare figures within one bucket.",
            default=S.RolloutSpec.max_latency_ratio, minimum=1, maximum=100),
        "maxErrorRatioIncrease": number(
            "Canary margin on errors: the canary's error ratio must stay at or below the stable version's plus "
            "this (0.01: one percentage point more), over the same window.",
            default=S.RolloutSpec.max_error_ratio_increase, minimum=0, maximum=1),
    }, default={}, rules=[rule(
        # isSorted (Kubernetes' CEL list library) gives the order; exists_one makes it strict.
        "!has(self.steps) || (self.steps.map(s, s.weight).isSorted() && "
        "self.steps.all(s, self.steps.exists_one(t, t.weight == s.weight)))",
        "spec.rollout.steps: weights must be strictly increasing: a canary only grows until it is promoted",
        field_path=".steps")])

    return obj(
        "What to serve and how. Unknown fields are pruned by the API server, and rejected with their name by "
        "clients using strict field validation (kubectl's default).", {
            "model": model, "optimization": optimization, "serving": serving, "autoscaling": autoscaling,
            "monitoring": monitoring, "rollout": rollout,
        }, required=["model"], rules=[rule(
            "!has(self.optimization) || !" + _overlaps_cel("self.optimization.outputUri", "self.model.uri"),
            "spec.optimization.outputUri " + S.OUTPUT_OVERLAP_MESSAGE.format(other="spec.model.uri"),
            field_path=".optimization.outputUri"), rule(
            "!has(self.optimization) || !has(self.optimization.dataset) || !"
            + _overlaps_cel("self.optimization.outputUri", "self.optimization.dataset.uri"),
            "spec.optimization.outputUri " + S.OUTPUT_OVERLAP_MESSAGE.format(other="spec.optimization.dataset.uri"),
            field_path=".optimization.outputUri"), rule(
            f"has(self.optimization) || !self.model.uri.lowerAscii().matches('{S.KERAS_FILE_PATTERN}')",
            f"spec.model.uri {S.KERAS_AS_IS_MESSAGE}", field_path=".model.uri"), rule(
            "!has(self.serving) || !has(self.serving.runtime) || self.serving.runtime != 'tflite' || "
            "(has(self.optimization) && has(self.optimization.quantization) && "
            "self.optimization.quantization.mode in " + str(list(S.TFLITE_QUANTIZATION_MODES)) + ")",
            "spec.serving.runtime " + S.TFLITE_MODE_MESSAGE, field_path=".serving.runtime"), rule(
            "has(self.optimization) || !has(self.serving) || !has(self.serving.runtime) || "
            "self.serving.runtime != 'auto'", "spec.serving.runtime auto " + S.AUTO_NEEDS_OPTIMIZATION,
            field_path=".serving.runtime"), rule(
            "has(self.optimization) || !has(self.serving) || !has(self.serving.batching) || "
            "!has(self.serving.batching.auto) || !self.serving.batching.auto",
            "spec.serving.batching.auto true " + S.AUTO_NEEDS_OPTIMIZATION + " (auto: false)",
            field_path=".serving.batching.auto")] + _canary_rules())


def _canary_rules() -> list:
    """The cross-field rules of strategy canary (spec.py's _check_canary), in the same order."""
    canary = "has(self.rollout) && has(self.rollout.strategy) && self.rollout.strategy == 'canary'"
    window = (f"(has(self.monitoring.slo.windowSeconds) ? self.monitoring.slo.windowSeconds : "
              f"{S.SLOSpec.window_seconds})")
    return [
        rule(f"!({canary}) || (has(self.monitoring) && has(self.monitoring.slo))",
             "spec.rollout.strategy canary " + S.CANARY_NEEDS_SLO_MESSAGE, field_path=".rollout.strategy"),
        rule(f"!({canary}) || (has(self.rollout.steps) && size(self.rollout.steps) > 0)",
             "spec.rollout.steps: strategy canary " + S.CANARY_NEEDS_STEPS_MESSAGE, field_path=".rollout.steps"),
        rule(f"!({canary}) || has(self.autoscaling) || (has(self.serving) && has(self.serving.replicas) ? "
             f"self.serving.replicas : 1) >= 2",
             "spec.serving.replicas: strategy canary " + S.CANARY_REPLICAS_MESSAGE, field_path=".serving.replicas"),
        # Static message: string(int) in a messageExpression has an unbounded cost estimate.
        rule(f"!({canary}) || !has(self.monitoring) || !has(self.monitoring.slo) || !has(self.rollout.steps) || "
             f"self.rollout.steps.all(s, s.durationSeconds >= {window})",
             "spec.rollout.steps[].durationSeconds must be >= spec.monitoring.slo.windowSeconds: a step's verdict "
             "covers one window, which must lie within the step; lengthen the step or shorten the window",
             field_path=".rollout.steps"),
    ]


# --------------------------------------------------------------------------------------------------------------
# status: complete, because the API server prunes whatever the schema does not list.

def status_schema() -> dict:
    """The OpenAPI schema of .status (written by the operator only)."""
    condition = obj("A condition in the metav1.Condition shape.", {
        "type": string("Ready, Optimized, Available, Reconciling, Stalled or Degraded.", max_length=316),
        "status": string("True, False or Unknown.", enum=("True", "False", "Unknown")),
        "reason": string("CamelCase reason a program can match on.", max_length=1024),
        "message": string("What happened, for humans.", max_length=32768),
        "observedGeneration": integer("metadata.generation the condition was computed for.", minimum=0,
                                      fmt="int64"),
        "lastTransitionTime": string("When status last changed.", fmt="date-time"),
    }, required=["type", "status", "lastTransitionTime", "reason", "message"])

    def i64(d):
        return integer(d, minimum=0, fmt="int64")

    def ts(d):
        return string(d, fmt="date-time")

    model = obj("Model versions.", {
        "requestedVersion": i64("spec.model.version as last handled."),
        "servingVersion": i64("Version the serving Deployment runs."),
        "lastGoodVersion": i64("Last version that completed a rollout and passed health checks; the rollback "
                               "target."),
        "failedVersion": i64("Last version whose optimization or rollout failed (not retried until the spec "
                             "changes)."),
        "uri": string("Storage location of the serving version."),
        "lastGoodImage": string("TF Serving image that served lastGoodVersion (restored by a rollback)."),
        "lastGoodUri": string("Storage location lastGoodVersion was pulled from (restored by a rollback)."),
        "lastGoodRuntime": string("Runtime (tensorflow or tflite) lastGoodVersion served with (restored by a "
                                  "rollback)."),
    })
    runtime_figures = {
        "latencyMs": number("p50 latency at batch 1, milliseconds."),
        "latencyP99Ms": number("p99 latency at batch 1, milliseconds."),
        "latencyB32Ms": number("p50 latency at batch 32, milliseconds."),
        "throughput": number("Rows per second at batch 32 (one caller)."),
        "accuracy": number("Metric of this artefact on the validation split."),
        "accuracyDrop": number("Metric lost against the original (for mse: the relative increase)."),
        "compressionRatio": number("originalCompressedBytes / compressedBytes: how much less a pod with this "
                                   "runtime downloads than the model as it was stored."),
        "compressedBytes": i64("gzip bytes a serving pod with this runtime pulls (warmup records included)."),
        "bytes": i64("Bytes on disk a serving pod with this runtime pulls."),
        "batchCurve": {"type": "array", "maxItems": 16, "description": "Latency of this artefact per batch size, "
                       "measured in the optimizer Job with latencyThreads threads (what batching.auto chooses from).",
                       "items": obj("One batch size.", {
                           "batchSize": i64("Rows per call."),
                           "latencyMs": number("p50 milliseconds per call."),
                           "latencyP99Ms": number("p99 milliseconds per call.")})},
    }
    optimization = obj("The last optimization: its Job and the report's figures.", {
        "job": string("Name of the optimizer Job."),
        "version": i64("Model version the Job optimized."),
        "hash": string("Hash of the optimization spec in the Job name."),
        "startTime": ts("When the Job started."),
        "completionTime": ts("When the Job finished."),
        "originalBytes": i64("Bytes on disk of the model as stored at spec.model.uri."),
        "optimizedBytes": i64("Bytes on disk a serving pod pulls: the files of the runtime that serves "
                              "(latencyRuntime), warmup records included."),
        "originalCompressedBytes": i64("gzip bytes of the model as stored at spec.model.uri."),
        "compressedBytes": i64("gzip bytes a serving pod pulls (the files of latencyRuntime)."),
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
        "latencyThreads": i64("TensorFlow intra- and inter-op threads of the latency runs: the serving pod's "
                              "(its CPU limit, else request), as TF Serving is started with."),
        "runtimes": obj("The figures of each runtime the version can be served with; those of "
                        "the runtime that serves (latencyRuntime) are also the optimized* and size fields above.",
                        dict({name: obj(f"Figures of the {name} artefact.", runtime_figures)
                              for name in S.ARTEFACT_RUNTIMES}, **{"tensorflow-gpu": obj(
                                  "Figures of the SavedModel computing in float16 that GPU pods pull (quantization "
                                  "float16): accuracy and bytes, no latency (measured on a GPU only).",
                                  runtime_figures)})),
        "quantization": string("Quantization mode applied."),
        "onnx": obj("model.onnx beside the version (spec.optimization.export.onnx).", {
            "bytes": i64("Size of model.onnx."),
            "compressedBytes": i64("gzip size of model.onnx."),
            "agreement": number("Share of validation rows where it answers as the float32 original."),
            "savedModelAgreement": number("Share of validation rows where it answers as the SavedModel it was "
                                          "converted from (the conversion's own error)."),
            "latencyMs": number("p50 latency at batch 1 in onnxruntime, milliseconds, with latencyThreads."),
            "skipped": string("Why it was not published (the conversion or its check failed)."),
        }),
        "search": obj("What spec.optimization.search chose (report.json beside the model keeps every candidate's "
                      "figures and why it lost).", {
                          "objective": string("size or latency."),
                          "candidates": i64("Sparsity x mode combinations in the search."),
                          "tried": i64("Candidates run within the time budget."),
                          "winner": obj("The published candidate.", {
                              "sparsity": number("Its pruning sparsity."),
                              "mode": string("Its quantization mode."),
                              "runtime": string("Its artefact's runtime (what runtime auto serves)."),
                          }),
                      }),
        "uri": string("Where the optimized version was published."),
        "message": string("Outcome in words (why a gate or the Job failed)."),
    })
    serving = obj("The serving Deployment and Service.", {
        "deployment": string("Name of the Deployment."),
        "service": string("Name of the Service."),
        "image": string("TF Serving image in use."),
        "runtime": string("What TF Serving runs: tensorflow (the SavedModel) or tflite (model.tflite)."),
        "runtimeReason": string("Why: spec.serving.runtime, or what runtime auto compared."),
        "batching": obj("The batching TF Serving runs with, when spec.serving.batching.auto chose it.", {
            "maxBatchSize": i64("Chosen max_batch_size (0: no batch size fits maxLatencyMs; batching is off)."),
            "batchTimeoutMicros": i64("Chosen batch_timeout_micros."),
            "expectedLatencyMs": number("Worst case per request: the timeout plus the batch's measured p99."),
            "throughput": number("Rows per second of one batch thread at maxBatchSize, as measured."),
            "maxLatencyMs": i64("The budget it was chosen within (spec.serving.batching.maxLatencyMs)."),
            "message": string("The choice in words, with the measurements it compared."),
        }),
        "version": i64("Model version of the Deployment's pod template."),
        "replicas": integer("Current replicas (the scale subresource's status).", minimum=0, fmt="int32"),
        "readyReplicas": integer("Ready replicas.", minimum=0, fmt="int32"),
        "updatedReplicas": integer("Replicas on the current pod template.", minimum=0, fmt="int32"),
        "availableReplicas": integer("Available replicas.", minimum=0, fmt="int32"),
        "restUrl": string("In-cluster REST URL of the model."),
        "grpcAddress": string("In-cluster gRPC host:port."),
        "metrics": obj(
            "What TF Serving's own metrics show for the serving version over spec.monitoring.slo.windowSeconds, "
            "summed over its ready pods (only with spec.monitoring.slo). Rewritten only when a figure moves by "
            "more than 10% (and more than a small absolute step), the pods scraped or the SLO state change, so "
            "an idle model costs no writes.", {
                "version": i64("Model version the figures were measured on."),
                "requestsPerSecond": number("Requests per second (every status), from "
                                            ":tensorflow:serving:request_count.", minimum=0),
                "errorRatio": number("Share of requests answered with a server-side error.", minimum=0),
                "p50Ms": number("Median request latency, milliseconds (interpolated within TF Serving's "
                                "histogram buckets); absent without requests.", minimum=0),
                "p99Ms": number("99th-percentile request latency, milliseconds; absent without requests.",
                                minimum=0),
                "windowSeconds": number("Seconds the figures really cover (scrapes are one monitor interval "
                                        "apart).", minimum=0),
                "pods": i64("Serving pods whose metrics were read."),
                "slo": string("Met, Violated or NoVerdict (fewer requests than minRequestsPerSecond, or none)."),
                "sloTransitionTime": ts("When slo last changed; it changes at most once per window."),
                "measureTime": ts("When these figures were measured."),
                "message": string("The figures against the bounds, in words."),
            }),
    })
    rollback = obj("Automatic rollbacks.", {
        "count": i64("Rollbacks so far."),
        "fromVersion": i64("Version rolled back from, last time."),
        "toVersion": i64("Version rolled back to, last time."),
        "lastReason": string("Reason of the last rollback."),
        "lastMessage": string("Details of the last rollback."),
        "lastTime": ts("When the last rollback happened."),
    })
    health = obj("The monitor's last health check.", {
        "state": string("Healthy, Unhealthy or Unknown."),
        "consecutiveFailures": i64("Failed checks in a row."),
        "lastCheckTime": ts("When the monitor last checked (written only when the state changes)."),
        "lastTransitionTime": ts("When the state last changed."),
        "message": string("Findings of the last check."),
        "modelState": string("TF Serving's model version state (AVAILABLE, LOADING, ...), when reachable."),
        "restarts": i64("Container restarts summed over serving pods."),
    })
    rollout = obj(
        "The canary rollout (spec.rollout.strategy canary): written while a canary runs, and kept after it was "
        "promoted or rolled back until the next one starts.", {
            "strategy": string("The strategy the rollout ran with (canary)."),
            "phase": string("Progressing (on a step), Holding (the step's duration passed without a verdict: "
                            "too little traffic; the step holds until traffic gives one), Promoted (the serving "
                            "Deployment rolls to the canary's version) or RolledBack (the canary was removed)."),
            "step": integer("The current step, from 1.", minimum=0, fmt="int32"),
            "steps": integer("Steps in spec.rollout.steps.", minimum=0, fmt="int32"),
            "weight": integer("The step's weight: percent of the replicas the canary runs.", minimum=0,
                              fmt="int32"),
            "canaryReplicas": integer("Replicas of the canary Deployment in this step.", minimum=0, fmt="int32"),
            "stableReplicas": integer("Replicas of the stable Deployment in this step (absent with autoscaling: "
                                      "the HPA sizes it).", minimum=0, fmt="int32"),
            "canaryVersion": i64("Model version of the canary."),
            "stableVersion": i64("Model version the stable Deployment serves (status.model.lastGoodVersion)."),
            "stepStartTime": ts("When the current step started (its duration counts from here)."),
            "failedChecks": integer("Consecutive interval checks with failing canary pods (rolled back at "
                                    "spec.monitoring.failureThreshold).", minimum=0, fmt="int32"),
            "message": string("The last judgment in words: the canary's and the stable version's figures "
                              "against the SLO and the margins."),
        })
    return obj(
        "Observed state, written by the operator only. kstatus-compatible: observedGeneration and the "
        "conditions Ready, Reconciling and Stalled are the contract; phase is a summary for humans.", {
            "observedGeneration": integer("metadata.generation of the spec last handled.", minimum=0, fmt="int64"),
            "phase": string("Pending, Optimizing, Deploying, Ready, Degraded or Failed."),
            "conditions": {"type": "array", "description": "Conditions in the metav1.Condition shape.",
                           "items": condition, "x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["type"]},
            "selector": string("Label selector of the serving pods (for the scale subresource and HPAs)."),
            "model": model, "optimization": optimization, "serving": serving, "rollback": rollback,
            "health": health, "rollout": rollout,
            "kopf": raw_object("Reserved for the Kopf framework's bookkeeping (the operator keeps it in "
                               "annotations; this normally stays empty)."),
        })


# --------------------------------------------------------------------------------------------------------------

PRINTER_COLUMNS = [
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
     "description": "The Ready condition."},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Summary for humans."},
    {"name": "Version", "type": "integer", "jsonPath": ".status.model.servingVersion",
     "description": "Model version serving."},
    {"name": "Compression", "type": "number", "jsonPath": ".status.optimization.compressionRatio",
     "description": "gzip size of the original over the optimized model."},
    {"name": "Accuracy-Drop", "type": "number", "jsonPath": ".status.optimization.accuracyDrop",
     "description": "Validation accuracy lost by optimizing."},
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.serving.readyReplicas",
     "description": "Ready serving replicas."},
    {"name": "Canary-Step", "type": "integer", "jsonPath": ".status.rollout.step",
     "description": "The canary's step (status.rollout.phase says whether it progresses, holds, was promoted or "
                    "rolled back)."},
    {"name": "SLO", "type": "string", "jsonPath": ".status.serving.metrics.slo",
     "description": "The serving version's SLO verdict: Met, Violated or NoVerdict."},
    {"name": "Canary", "type": "string", "jsonPath": ".status.rollout.phase", "priority": 1,
     "description": "Phase of the canary rollout."},
    {"name": "Canary-Weight", "type": "integer", "jsonPath": ".status.rollout.weight", "priority": 1,
     "description": "Percent of the replicas the canary runs."},
    {"name": "Requested", "type": "integer", "jsonPath": ".spec.model.version", "priority": 1,
     "description": "Model version asked for."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd() -> dict:
    """The whole CustomResourceDefinition as a dict."""
    root = obj(
        "A ModelDeployment optimizes a TensorFlow model (pruning, quantization, accuracy gate) in a Job, "
        "publishes it as a versioned SavedModel, and serves it with TensorFlow Serving (GPUs, autoscaling, "
        "health monitoring, rollback). Unknown fields are pruned; kubectl and server-side apply with strict "
        "field validation reject them by name.", {
            "apiVersion": string("API version: modeldeploy.io/v1alpha1."),
            "kind": string("ModelDeployment."),
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        }, required=["spec"], rules=[rule(
            f"size(self.metadata.name) <= {S.MAX_NAME_LENGTH} && self.metadata.name.matches('{S.DNS1035_LABEL}')",
            "metadata.name must be a DNS-1035 label of at most 63 characters (lower-case letters, digits and '-', "
            "starting with a letter): it names the Service and the other children")])
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/name": "modeldeploy"}},
        "spec": {
            "group": S.API_GROUP,
            "names": {"kind": S.KIND, "listKind": f"{S.KIND}List", "plural": S.PLURAL,
                      "singular": S.KIND.lower(), "shortNames": ["md"], "categories": ["all", "modeldeploy"]},
            "scope": "Namespaced",
            "versions": [{
                "name": S.API_VERSION, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": root},
                "subresources": {"status": {}, "scale": {
                    "specReplicasPath": ".spec.serving.replicas",
                    "statusReplicasPath": ".status.serving.replicas",
                    "labelSelectorPath": ".status.selector"}},
                "additionalPrinterColumns": PRINTER_COLUMNS,
            }],
        },
    }


def spec_properties() -> dict:
    """Shortcut for tests: the schema of .spec."""
    return copy.deepcopy(crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"])


def render_yaml() -> str:
    """The CRD file's text."""
    header = ("# Generated by `python -m modeldeploy.api.crd` from operator/modeldeploy/api/crd.py; do not edit.\n"
              "# tests/unit/test_schema_sync.py checks that this file, the generator and spec.py agree.\n")
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)


def main(argv=None) -> int:
    """Write crds/ and docs/api.md (run from the repository root), or check them with --check."""
    from modeldeploy.api import apidoc
    argv = sys.argv[1:] if argv is None else argv
    outputs = {CRD_FILE: render_yaml(), DOC_FILE: apidoc.render_markdown(crd())}
    stale = [str(p) for p, text in outputs.items() if not p.exists() or p.read_text() != text]
    if "--check" in argv:
        for p in stale:
            print(f"{p} is out of date: run python -m modeldeploy.api.crd", file=sys.stderr)
        return 1 if stale else 0
    for p, text in outputs.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
