"""The declaration of spec.serving and spec.autoscaling (see fields.py for how parser, CRD and docs follow)."""
from __future__ import annotations

from modeldeploy.api import k8s_types
from modeldeploy.api import limits as L
from modeldeploy.api.fields import ApiObject, Invalid, Rule, api_object, field
from modeldeploy.api.openapi import rule


def _auto_needs_budget(b: BatchingSpec) -> None:
    # With auto, maxBatchSize and batchTimeoutMicros are chosen (the CRD defaults them, so they cannot be refused
    # when present).
    if b.auto and b.max_latency_ms is None:
        raise Invalid("auto: true needs a latency budget to choose within: set maxLatencyMs (milliseconds per "
                      "request)", ".maxLatencyMs")


@api_object
class BatchingSpec(ApiObject):
    """spec.serving.batching: TF Serving server-side batching parameters."""
    RULES = (Rule("!has(self.auto) || !self.auto || has(self.maxLatencyMs)",
                  "spec.serving.batching.maxLatencyMs: auto: true needs a latency budget to choose within: set "
                  "maxLatencyMs (milliseconds per request)", _auto_needs_budget, field_path=".maxLatencyMs"),)
    max_batch_size: int = field(
        "Largest batch TF Serving forms. TF Serving refuses a request with more rows (HTTP 400 'Task size N is "
        "larger than maximum input batch size'): clients split larger requests. Chosen instead when auto is true.",
        32, minimum=1, maximum=65536)
    batch_timeout_micros: int = field("How long to wait to fill a batch, in microseconds. Chosen instead when auto "
                                      "is true.", 2000, minimum=0, maximum=10_000_000)
    max_enqueued_batches: int = field("Queue length before requests are refused.", 100, minimum=1,
                                      maximum=1_000_000)
    num_batch_threads: int = field("Threads that run batches in parallel.", 4, minimum=1, maximum=1024)
    auto: bool = field(
        "Choose maxBatchSize and batchTimeoutMicros from the latency the optimizer Job measured per batch size in "
        "the runtime that serves: the most rows per second whose worst case (the timeout plus the batch's p99) "
        "fits maxLatencyMs. Needs spec.optimization; status.serving.batching shows the choice and the "
        "measurements.", False)
    max_latency_ms: int | None = field("Latency budget per request, in milliseconds, that auto chooses within "
                                       "(required with auto).", None, minimum=1, maximum=60_000)


def _at_most_one_gpu(gpus: int) -> None:
    if gpus > L.MAX_GPUS:
        raise Invalid(f"{L.GPUS_MESSAGE} (got {gpus})")


def _tflite_on_cpu(s: ServingSpec) -> None:
    if s.runtime == "tflite" and s.gpus > 0:
        raise Invalid(L.TFLITE_GPU_MESSAGE, ".runtime")


def _auto_batching_on_cpu(s: ServingSpec) -> None:
    if s.batching is not None and s.batching.auto and s.gpus > 0:
        raise Invalid(L.BATCHING_AUTO_GPU_MESSAGE, ".batching.auto")


@api_object
class ServingSpec(ApiObject):
    """spec.serving: the TF Serving Deployment."""
    RULES = (
        Rule("!has(self.runtime) || self.runtime != 'tflite' || !has(self.gpus) || self.gpus == 0",
             "spec.serving.runtime " + L.TFLITE_GPU_MESSAGE, _tflite_on_cpu, field_path=".runtime", priority=1),
        Rule("!has(self.batching) || !has(self.batching.auto) || !self.batching.auto || !has(self.gpus) || "
             "self.gpus == 0", "spec.serving.batching.auto " + L.BATCHING_AUTO_GPU_MESSAGE, _auto_batching_on_cpu,
             field_path=".batching.auto"),
    )
    image: str = field(
        f"TF Serving image. Empty: tensorflow/serving:{L.TF_SERVING_VERSION}, or the -gpu tag when gpus > 0 (the "
        f"operator may be configured with mirrors).", "", empty_ok=True, max_length=512, pattern=L.IMAGE_PATTERN,
        pattern_message="spec.serving.image must be an image reference such as tensorflow/serving:2.21.0 or "
                        "registry.example.com:5000/serving@sha256:<digest>",
        hint="use an image reference such as tensorflow/serving:2.21.0 or "
             "registry.example.com:5000/serving@sha256:<digest>")
    replicas: int = field(
        "Serving replicas (the scale subresource: kubectl scale changes this). Ignored while spec.autoscaling is "
        "set: the HorizontalPodAutoscaler owns the replica count then.", 1, minimum=0, maximum=1000)
    gpus: int = field(
        "GPUs per replica (limits nvidia.com/gpu): 0 or 1. 1 selects the -gpu image, adds a toleration for "
        "nvidia.com/gpu and the node selector nvidia.com/gpu.present=true unless you give your own. TF Serving "
        "places a model on one GPU, so scale out with replicas instead.", 0, minimum=0,
        rules=(rule(f"self <= {L.MAX_GPUS}", f"spec.serving.gpus {L.GPUS_MESSAGE}"),), checks=(_at_most_one_gpu,))
    node_selector: dict = field("Node labels the serving pods must match (replaces the GPU default).",
                                default_factory=dict, custom=k8s_types.label_map("spec.serving.nodeSelector"))
    tolerations: tuple = field("Tolerations of the serving pods (replace the GPU default).", (),
                               custom=k8s_types.TOLERATIONS)
    affinity: dict = field("A Kubernetes Affinity for the serving pods (node, pod and anti-affinity).",
                           default_factory=dict, custom=k8s_types.passthrough("an object (a Kubernetes Affinity)"))
    resources: dict = field("CPU and memory of the TF Serving container (GPUs come from spec.serving.gpus).",
                            default_factory=dict, custom=k8s_types.RESOURCES)
    runtime: str = field(
        "What TF Serving runs: tensorflow (the SavedModel) or tflite (the model.tflite the optimizer publishes for "
        "quantization modes dynamic, int8 and qat: TF Serving's --prefer_tflite_model, CPU only, usually several "
        "times faster on CPU at small batches), or auto: the one that measured fastest at batch 1 in the optimizer "
        "Job and passed the gates (tensorflow when gpus > 0; needs spec.optimization). A serving pod pulls only "
        "its runtime's artefact.", "tensorflow", enum=L.RUNTIMES, enum_word="runtime")
    batching: BatchingSpec | None = field("Server-side batching in TF Serving. Leave it out to serve request by "
                                          "request.", None)

    def resolve(self, context: dict) -> None:
        # Empty: the pinned TF Serving image, or its -gpu tag (both configurable for mirrors).
        if not self.image:
            images = context["images"]
            self._set("image", images.gpu if self.gpus > 0 else images.cpu)


def _max_above_min(a: AutoscalingSpec) -> None:
    if a.max_replicas < a.min_replicas:
        raise Invalid(f"must be >= minReplicas ({a.min_replicas}), got {a.max_replicas}", ".maxReplicas")


@api_object
class AutoscalingSpec(ApiObject):
    """spec.autoscaling: an autoscaling/v2 HPA; `metrics` (raw MetricSpec dicts) replace the CPU target."""
    # A static message: the API server's cost estimate for string(int) in a messageExpression is unbounded.
    RULES = (Rule("self.maxReplicas >= self.minReplicas",
                  "spec.autoscaling.maxReplicas must be greater than or equal to spec.autoscaling.minReplicas",
                  _max_above_min, field_path=".maxReplicas"),)
    min_replicas: int = field("Fewest replicas.", 1, minimum=1, maximum=1000)
    max_replicas: int = field("Most replicas; at least minReplicas.", minimum=1, maximum=1000, kw_only=True)
    target_cpu_utilization: int = field(
        "Target average CPU utilization in percent of the CPU request. Used when metrics is empty.", 70,
        alias="targetCPUUtilization", minimum=1, maximum=1000)
    metrics: tuple = field("autoscaling/v2 MetricSpec list used as it is; replaces the CPU target.", (),
                           custom=k8s_types.METRICS)
