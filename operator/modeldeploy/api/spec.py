"""The ModelDeployment spec as typed, immutable, defaulted values.

This module is the one place in Python that knows the shape of `spec`. Everything else (builders, reconciler,
monitor, `modeldeploy render`) takes a `ModelDeploymentSpec` from `parse()` and never reads the raw body.

Interface (stable; other modules depend on it):

- `parse(body, images=DEFAULT_IMAGES) -> ModelDeploymentSpec`: takes the whole object (apiVersion, kind,
  metadata, spec), applies the same defaults as the CRD schema, and validates everything the CRD checks
  (so `render` without a cluster, and objects stored under an older CRD, get the same answers) plus what CEL
  cannot express. Raises `SpecError(field, message)` where `field` is the full path (`spec.autoscaling.
  maxReplicas`) and `message` says what is wrong and how to fix it.
- `optimization_hash(spec) -> str`: 8 hex characters from a canonical JSON of the defaulted optimization spec
  and the model URI; part of the Job name, so any change to them means a new Job.
- `source_uri(spec, version) -> str`: where the serving init container pulls version N from.
- `ServingImages` / `DEFAULT_IMAGES` / `images_from_env()`: the pinned TF Serving images (CPU and -gpu).

Optional sub-specs are `None` when absent: `optimization` (serve the model as it is, no Job), `autoscaling`
(fixed replicas, no HPA), `serving.batching` (TF Serving batching off), `optimization.pruning`,
`optimization.quantization`, `optimization.dataset`, `monitoring.slo` (no TF Serving metrics are scraped).
`serving`, `monitoring`, `rollout` and
`optimization.gates` are always present with defaults.

Raw Kubernetes structures (resources, nodeSelector, tolerations, affinity, HPA metrics) are kept as plain
dicts/tuples of dicts exactly as the user wrote them: treat them as read-only and copy before embedding them
in a manifest.

Versions: `model.version` is the version the user asks for. Applying a version lower than the one serving is a
manual rollback and is allowed: that version is served (it is optimized again first if it is not published).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from modeldeploy.api import quantity

API_GROUP = "modeldeploy.io"
API_VERSION = "v1alpha1"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"

# TF Serving release matching the TensorFlow (2.21) the optimizer exports with, so every op it writes has a kernel.
TF_SERVING_VERSION = "2.21.0"

URI_SCHEMES = ("s3", "gs", "pvc", "file")
QUANTIZATION_MODES = ("none", "dynamic", "float16", "int8", "qat")
# TF Serving places an unpinned graph on GPU:0 only: a second GPU per replica would sit idle.
MAX_GPUS = 1
GPUS_MESSAGE = ("must be 0 or 1: TF Serving places a model on one GPU (GPU:0), so more GPUs per "
                "replica sit idle; use gpus: 1 and raise spec.serving.replicas or spec.autoscaling.maxReplicas")
# TF Serving loads SavedModel directories only; a Keras file must go through the optimizer Job's export.
KERAS_FILE_PATTERN = r"^.*[.](keras|h5|hdf5)$"     # [.] rather than a backslash: CEL strings have no such escape
KERAS_AS_IS_MESSAGE = ("is a Keras file, which TF Serving cannot load (it serves SavedModel "
                       "directories): add spec.optimization (for example quantization: {mode: none}) so the "
                       "optimizer Job exports a SavedModel, or point spec.model.uri at a SavedModel directory")
# Modes that need a dataset: int8 calibrates on it, qat trains on it.
QUANTIZATION_MODES_NEEDING_DATA = ("int8", "qat")
SEARCH_OBJECTIVES = ("size", "latency")
MAX_SEARCH_AXIS = 8     # at most 8 x 8 candidates: each one is a whole optimization
SEARCH_REPLACES_MESSAGE = ("tries its own sparsities and modes: remove spec.optimization.pruning and "
                           "spec.optimization.quantization, or remove search")
# What TF Serving runs: the SavedModel (TensorFlow), or the model.tflite the optimizer writes for these modes
# (--prefer_tflite_model; TF Serving's TFLite path runs on CPU only).
# auto: the one that measured fastest, within the gates, in the optimizer Job (tensorflow on GPU nodes).
ARTEFACT_RUNTIMES = ("tensorflow", "tflite")
RUNTIMES = ARTEFACT_RUNTIMES + ("auto",)
AUTO_NEEDS_OPTIMIZATION = ("chooses from what the optimizer Job measured: add spec.optimization, or set "
                           "it explicitly")
TFLITE_QUANTIZATION_MODES = ("dynamic", "int8", "qat")
TFLITE_MODE_MESSAGE = ("serves model.tflite, which the optimizer writes for quantization modes dynamic, int8 and "
                       "qat: set spec.optimization.quantization.mode to one of them, or use runtime: tensorflow")
TFLITE_GPU_MESSAGE = ("tflite runs on CPU (TF Serving's TFLite path has no GPU support): set spec.serving.gpus: 0, "
                      "or use runtime: tensorflow on GPUs")
BATCHING_AUTO_GPU_MESSAGE = ("chooses from latency the optimizer Job measures on CPU, which says nothing of a GPU: "
                             "with gpus > 0 set maxBatchSize and batchTimeoutMicros instead (auto: false)")
METRIC_TYPES = ("Resource", "Pods", "Object", "External", "ContainerResource")
TOLERATION_OPERATORS = ("Exists", "Equal")
TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

# Patterns shared with the CRD generator (crd.py) so both reject the same strings.
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Object names become Service names, which must be DNS-1035 labels (start with a letter).
DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# No backslashes in these patterns: they are embedded in CEL string literals as they are.
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# s3://bucket/..., gs://bucket/..., pvc://claim/..., file:///absolute/path (as storage/uris.py reads them).
# Printable ASCII only (no whitespace, control or bidi characters: a URI reaches logs, Events and TF Serving's
# config), no user part in the authority (credentials belong in storageSecret), no empty segments ('//', so one
# location has one spelling and overlaps can be compared), no quote characters; '..' segments are refused
# separately (RE2 has no look-ahead).
_URI_SEGMENT = r"/[A-Za-z0-9._~:?#@!$&()*+,;=%-]+"
URI_PATTERN = rf"^((s3|gs|pvc)://[A-Za-z0-9._~-]+({_URI_SEGMENT})*|file://({_URI_SEGMENT})+)/?$"
# Local paths a pod must never read as a model or dataset: kernel and device files, and the service-account
# token (which the optimizer pod does not mount, but a node-level path could reach it).
FORBIDDEN_FILE_PATTERN = r"^file:///(proc|sys|dev|run|var/run|etc)(/.*)?$"
# Label keys (an optional DNS-subdomain prefix, then a name of at most 63 characters) and values, as the API
# server checks them on a pod's nodeSelector and tolerations; refused here with the field, not in a child.
LABEL_KEY_PATTERN = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                     r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
# An image reference: [registry[:port]/]path[:tag][@sha256:digest], lower-case path components.
IMAGE_PATTERN = (r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*"
                 r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$")
MAX_DEADLINE_SECONDS = 7 * 86400       # an optimizer Job running longer than a week is stuck
MAX_TTL_SECONDS = 365 * 86400
MAX_NESTING = 32                       # pass-through objects (affinity): deeper is never a real Affinity
MAX_NAME_LENGTH = 63
OUTPUT_OVERLAP_MESSAGE = ("must not be {other}, lie inside it or contain it: versions are published under "
                          "<outputUri>/<version>/, and publishing must never overwrite its own source")
MAX_URI_LENGTH = 2048
# spec.monitoring.slo. The window is bounded below so it holds at least one step of a 30 s monitor interval, and
# above because the operator keeps every step of it in memory for every object with an SLO.
MIN_SLO_WINDOW, MAX_SLO_WINDOW = 30, 3600
MAX_SLO_LATENCY_MS = 600_000           # TF Serving's latency histogram ends near 20 minutes; 10 is already absurd
MAX_SLO_RATE = 1_000_000.0
SLO_NEEDS_PROMETHEUS_MESSAGE = ("needs spec.monitoring.prometheus: true: the figures come from TF Serving's own "
                                "Prometheus endpoint on each serving pod; enable it or remove slo")
SLO_WINDOW_MESSAGE = ("the figures come from scrapes one monitor interval apart, so a window shorter than the "
                      "interval holds no whole step; raise windowSeconds or lower intervalSeconds")
# spec.rollout. A canary step must cover a whole SLO window, or its verdict would rest on traffic of the step
# before; ten steps are more than any progressive rollout needs and keep CEL's cost estimate small.
ROLLOUT_STRATEGIES = ("rolling", "canary")
MAX_CANARY_STEPS = 10
MIN_STEP_SECONDS, MAX_STEP_SECONDS = MIN_SLO_WINDOW, 86400
CANARY_NEEDS_SLO_MESSAGE = ("needs spec.monitoring.slo: a canary is promoted or rolled back on TF Serving's "
                            "figures, so set spec.monitoring.slo (e.g. maxP99LatencyMs, maxErrorRatio) or use "
                            "strategy rolling")
CANARY_NEEDS_STEPS_MESSAGE = ("needs at least one step: set spec.rollout.steps (e.g. [{weight: 10, "
                              "durationSeconds: 300}, {weight: 50, durationSeconds: 300}]) or use strategy rolling")
CANARY_REPLICAS_MESSAGE = ("needs spec.serving.replicas >= 2 (the canary takes its share of the replicas and the "
                           "stable version keeps at least one) or spec.autoscaling: raise replicas or use strategy "
                           "rolling")
MAX_VERSION = 2**31 - 1   # int32 range: leaves `<name>-opt-<N>-<hash>` room for a name in 63 characters


class SpecError(ValueError):
    """A ModelDeployment that cannot be served as written. `field` is the full path, `message` the fix."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ServingImages:
    """TF Serving images: `cpu` when serving.gpus == 0, `gpu` otherwise."""
    cpu: str = f"tensorflow/serving:{TF_SERVING_VERSION}"
    gpu: str = f"tensorflow/serving:{TF_SERVING_VERSION}-gpu"


DEFAULT_IMAGES = ServingImages()


def images_from_env(environ: Mapping[str, str] = os.environ) -> ServingImages:
    """Images overridden by MODELDEPLOY_SERVING_IMAGE / MODELDEPLOY_SERVING_IMAGE_GPU (air-gapped mirrors)."""
    return ServingImages(cpu=environ.get("MODELDEPLOY_SERVING_IMAGE") or DEFAULT_IMAGES.cpu,
                         gpu=environ.get("MODELDEPLOY_SERVING_IMAGE_GPU") or DEFAULT_IMAGES.gpu)


def _json(name: str) -> dict:
    """Field metadata for a JSON name that plain camelCase conversion would get wrong."""
    return {"json": name}


@dataclass(frozen=True)
class ModelSpec:
    """spec.model: where the trained model is and which version to serve."""
    uri: str
    version: int = 1
    name: str = ""                 # TF Serving model name; parse() fills in metadata.name
    storage_secret: str | None = None


@dataclass(frozen=True)
class PruningSpec:
    """spec.optimization.pruning: magnitude pruning to a target sparsity."""
    sparsity: float
    fine_tune_epochs: int = 0


@dataclass(frozen=True)
class QuantizationSpec:
    """spec.optimization.quantization."""
    mode: str = "dynamic"
    fine_tune_epochs: int = 0      # qat only: epochs of quantization-aware training (parse() defaults qat to 1)


@dataclass(frozen=True)
class DatasetSpec:
    """spec.optimization.dataset: an .npz with x_train, y_train, x_val, y_val."""
    uri: str


@dataclass(frozen=True)
class GatesSpec:
    """spec.optimization.gates: None disables a gate."""
    max_accuracy_drop: float | None = None
    min_compression: float | None = None


@dataclass(frozen=True)
class SearchSpec:
    """spec.optimization.search: try every sparsity x mode (x the runtimes each publishes) within a time budget
    and publish the best candidate by `objective` that passes the gates."""
    sparsities: tuple
    modes: tuple
    objective: str = "size"
    time_budget_seconds: int = 1800
    fine_tune_epochs: int = 0


@dataclass(frozen=True)
class ExportSpec:
    """spec.optimization.export: artefacts beside the SavedModel for serving elsewhere (no TF Serving pod pulls
    them)."""
    onnx: bool = False


@dataclass(frozen=True)
class OptimizationSpec:
    """spec.optimization: what the optimizer Job does, and how the Job runs."""
    output_uri: str
    pruning: PruningSpec | None = None
    quantization: QuantizationSpec | None = None
    dataset: DatasetSpec | None = None
    gates: GatesSpec = GatesSpec()
    search: SearchSpec | None = None
    export: ExportSpec | None = None
    resources: dict = field(default_factory=dict)
    node_selector: dict = field(default_factory=dict)
    tolerations: tuple = ()
    backoff_limit: int = 1
    active_deadline_seconds: int = 7200
    ttl_seconds_after_finished: int | None = None

    @property
    def fine_tune_epochs(self) -> int:
        """Epochs for the optimizer's --fine-tune-epochs: pruning fine-tuning and QAT share one training run."""
        return max(self.pruning.fine_tune_epochs if self.pruning else 0,
                   self.quantization.fine_tune_epochs if self.quantization else 0,
                   self.search.fine_tune_epochs if self.search else 0)


@dataclass(frozen=True)
class BatchingSpec:
    """spec.serving.batching: TF Serving server-side batching parameters."""
    max_batch_size: int = 32
    batch_timeout_micros: int = 2000
    max_enqueued_batches: int = 100
    num_batch_threads: int = 4
    auto: bool = False                    # maxBatchSize and batchTimeoutMicros from the Job's measurements
    max_latency_ms: int | None = None     # the latency budget auto chooses within


@dataclass(frozen=True)
class ServingSpec:
    """spec.serving: the TF Serving Deployment."""
    image: str = ""                # parse() resolves "" to the pinned CPU or GPU image
    replicas: int = 1
    gpus: int = 0
    node_selector: dict = field(default_factory=dict)
    tolerations: tuple = ()
    affinity: dict = field(default_factory=dict)
    resources: dict = field(default_factory=dict)
    batching: BatchingSpec | None = None
    runtime: str = "tensorflow"


@dataclass(frozen=True)
class AutoscalingSpec:
    """spec.autoscaling: an autoscaling/v2 HPA; `metrics` (raw MetricSpec dicts) replace the CPU target."""
    max_replicas: int
    min_replicas: int = 1
    target_cpu_utilization: int = field(default=70, metadata=_json("targetCPUUtilization"))
    metrics: tuple = ()


@dataclass(frozen=True)
class SLOSpec:
    """spec.monitoring.slo: bounds on what TF Serving's own metrics show over a window. A bound left out is not
    checked; with none set, the figures are only reported."""
    max_p99_latency_ms: int | None = None
    max_error_ratio: float | None = None
    min_requests_per_second: float = 1.0       # below this no verdict is drawn: too few requests to judge
    window_seconds: int = 120


@dataclass(frozen=True)
class MonitoringSpec:
    """spec.monitoring: health checks, Prometheus metrics, service-level objectives and automatic rollback."""
    interval_seconds: int = 30
    failure_threshold: int = 3
    prometheus: bool = True
    rollback: bool = True
    slo: SLOSpec | None = None


@dataclass(frozen=True)
class CanaryStep:
    """One step of spec.rollout.steps: the canary runs `weight` percent of the replicas for `duration_seconds`."""
    weight: int
    duration_seconds: int


@dataclass(frozen=True)
class RolloutSpec:
    """spec.rollout: how a new version replaces the serving one. `steps` and the two margins are read by strategy
    canary only (kept under rolling, so switching strategy is a one-field edit)."""
    progress_deadline_seconds: int = 600
    strategy: str = "rolling"
    steps: tuple = ()                      # CanaryStep, weights strictly increasing
    max_latency_ratio: float = 1.2         # canary p99 <= stable p99 x this
    max_error_ratio_increase: float = 0.01     # canary error ratio <= stable error ratio + this


@dataclass(frozen=True)
class ModelDeploymentSpec:
    """A parsed ModelDeployment: `name`/`namespace` come from metadata, everything else from spec."""
    name: str
    namespace: str
    model: ModelSpec
    serving: ServingSpec = ServingSpec()
    optimization: OptimizationSpec | None = None
    autoscaling: AutoscalingSpec | None = None
    monitoring: MonitoringSpec = MonitoringSpec()
    rollout: RolloutSpec = RolloutSpec()


# Fields of ModelDeploymentSpec that come from metadata, not spec (the schema-sync test skips them).
METADATA_FIELDS = ("name", "namespace")


def json_name(f: dataclasses.Field) -> str:
    """The JSON (camelCase) name of a dataclass field, as it appears in the CRD."""
    if "json" in f.metadata:
        return f.metadata["json"]
    head, *rest = f.name.split("_")
    return head + "".join(part.capitalize() for part in rest)


# --------------------------------------------------------------------------------------------------------------
# Parsing. Small typed readers carry the field path so every error names the field.

_MISSING = object()


def _get(obj: Mapping, key: str, path: str, kind: type | tuple, what: str, default=_MISSING):
    value = obj.get(key, _MISSING) if obj is not None else _MISSING
    if value is _MISSING or value is None:
        if default is _MISSING:
            raise SpecError(f"{path}.{key}", f"is required: set {what}")
        return default
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind in (int, float, (int, float)))
    if not ok:
        raise SpecError(f"{path}.{key}", f"must be {what}, got {type(value).__name__} {value!r}")
    return value


def _int(obj, key, path, *, default=_MISSING, minimum=None, maximum=None):
    value = _get(obj, key, path, int, "an integer", default)
    if value is None:
        return None
    if minimum is not None and value < minimum:
        raise SpecError(f"{path}.{key}", f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SpecError(f"{path}.{key}", f"must be <= {maximum}, got {value}")
    return value


def _num(obj, key, path, *, default=_MISSING, minimum=None, maximum=None, exclusive=False):
    value = _get(obj, key, path, (int, float), "a number", default)
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        raise SpecError(f"{path}.{key}", "must be a number, got NaN")
    low_bad = minimum is not None and (value <= minimum if exclusive else value < minimum)
    high_bad = maximum is not None and (value >= maximum if exclusive else value > maximum)
    if low_bad or high_bad:
        span = f"strictly between {minimum} and {maximum}" if exclusive else \
            f"between {minimum} and {maximum}" if minimum is not None and maximum is not None else \
            f">= {minimum}" if minimum is not None else f"<= {maximum}"
        raise SpecError(f"{path}.{key}", f"must be {span}, got {value:g}")
    return value


def _str(obj, key, path, *, default=_MISSING, pattern=None, hint="", max_length=None):
    value = _get(obj, key, path, str, "a string", default)
    if value is None or (value == "" and default == ""):
        return value
    if max_length is not None and len(value) > max_length:
        raise SpecError(f"{path}.{key}", f"must be at most {max_length} characters, got {len(value)}")
    if pattern is not None and not re.fullmatch(pattern, value):
        raise SpecError(f"{path}.{key}", f"{value!r} is not valid: {hint}")
    return value


def _bool(obj, key, path, *, default):
    return _get(obj, key, path, bool, "true or false", default)


def _obj(obj, key, path, *, required=False):
    """A nested object: None when absent (or a required-field error)."""
    return _get(obj, key, path, dict, "an object", _MISSING if required else None)


def _uri(obj, key, path, *, default=_MISSING):
    value = _str(obj, key, path, default=default, max_length=MAX_URI_LENGTH, pattern=URI_PATTERN,
                 hint="use a URI with scheme s3://, gs://, pvc:// or file:/// (e.g. s3://bucket/models/digits)")
    if value and ("/../" in value or value.endswith("/..")):
        raise SpecError(f"{path}.{key}", f"{value!r} must not contain '..' path segments")
    if value and re.fullmatch(FORBIDDEN_FILE_PATTERN, value):
        raise SpecError(f"{path}.{key}", f"{value!r} is a system path (/proc, /sys, /dev, /run, /etc): "
                                         "use a storage URI or a file:/// path to a model volume")
    return value


def overlaps(a: str, b: str) -> bool:
    """Whether two storage locations are the same or one lies inside the other (URIs have no '//')."""
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


def _known(obj: Mapping | None, path: str, cls) -> None:
    """Unknown keys are errors here too: the API server would prune or reject them, `render` must not differ."""
    if not obj:
        return
    known = {json_name(f) for f in dataclasses.fields(cls)}
    if cls is ModelDeploymentSpec:
        known -= set(METADATA_FIELDS)
    for key in obj:
        if key not in known:
            raise SpecError(f"{path}.{key}", f"unknown field; known fields: {', '.join(sorted(known))}")


def _string_map(obj, key, path, labels: bool = False) -> dict:
    value = _get(obj, key, path, dict, "a map of strings", {})
    for k, v in value.items():
        if not isinstance(v, str):
            raise SpecError(f"{path}.{key}.{k}", f"must be a string, got {type(v).__name__} {v!r} "
                                                 f"(quote it in YAML)")
        if labels and (len(k) > 317 or not re.fullmatch(LABEL_KEY_PATTERN, k)):
            raise SpecError(f"{path}.{key}", f"{k!r} is not a label key: [prefix/]name, the name at most 63 "
                                             "letters, digits, '-', '_' or '.'")
        if labels and not re.fullmatch(LABEL_VALUE_PATTERN, v):
            raise SpecError(f"{path}.{key}.{k}", f"{v!r} is not a label value: at most 63 letters, digits, '-', "
                                                 "'_' or '.', starting and ending with a letter or digit")
    return dict(value)


def _depth(value, limit: int) -> int:
    """Nesting depth of a JSON value, counted no further than `limit` + 1 (no recursion, so no stack limit)."""
    stack, deepest = [(value, 1)], 0
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            break
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else ()
        stack.extend((c, d + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def _raw_object(obj, key, path, what: str) -> dict:
    value = _get(obj, key, path, dict, what, {})
    if _depth(value, MAX_NESTING) > MAX_NESTING:
        raise SpecError(f"{path}.{key}", f"is nested deeper than {MAX_NESTING} levels: not {what}")
    return value


def _resources(obj, key, path) -> dict:
    value = _get(obj, key, path, dict, "an object with limits and requests", {})
    for section, quantities in value.items():
        spath = f"{path}.{key}.{section}"
        if section not in ("limits", "requests"):
            raise SpecError(spath, "unknown field; known fields: limits, requests")
        if not isinstance(quantities, dict):
            raise SpecError(spath, "must be a map of resource name to quantity")
        for name, q in quantities.items():
            if isinstance(q, bool) or not isinstance(q, (int, float, str)) \
                    or not re.fullmatch(quantity.PATTERN, str(q)):
                raise SpecError(f"{spath}.{name}", f"{q!r} is not a quantity (e.g. 500m, 2, 4Gi)")
    return dict(value)


def _tolerations(obj, key, path) -> tuple:
    value = _get(obj, key, path, list, "a list of tolerations", [])
    out = []
    for i, t in enumerate(value):
        tpath = f"{path}.{key}[{i}]"
        if not isinstance(t, dict):
            raise SpecError(tpath, "must be an object (key, operator, value, effect, tolerationSeconds)")
        allowed = {"key", "operator", "value", "effect", "tolerationSeconds"}
        for k in t:
            if k not in allowed:
                raise SpecError(f"{tpath}.{k}", f"unknown field; known fields: {', '.join(sorted(allowed))}")
        key_ = _str(t, "key", tpath, default=None)
        if key_ and not re.fullmatch(LABEL_KEY_PATTERN, key_):
            raise SpecError(f"{tpath}.key", f"{key_!r} is not a taint key: [prefix/]name, the name at most 63 "
                                            "letters, digits, '-', '_' or '.'")
        value_ = _str(t, "value", tpath, default=None)
        if value_ and not re.fullmatch(LABEL_VALUE_PATTERN, value_):
            raise SpecError(f"{tpath}.value", f"{value_!r} is not a taint value: at most 63 letters, digits, '-', "
                                              "'_' or '.'")
        op = _str(t, "operator", tpath, default=None)
        if op is not None and op not in TOLERATION_OPERATORS:
            raise SpecError(f"{tpath}.operator", f"must be one of {', '.join(TOLERATION_OPERATORS)}, got {op!r}")
        eff = _str(t, "effect", tpath, default=None)
        if eff not in (None, "") and eff not in TOLERATION_EFFECTS:
            raise SpecError(f"{tpath}.effect", f"must be one of {', '.join(TOLERATION_EFFECTS)}, got {eff!r}")
        _int(t, "tolerationSeconds", tpath, default=None)
        out.append(dict(t))
    return tuple(out)


def _parse_model(spec: Mapping, name: str) -> ModelSpec:
    path = "spec.model"
    m = _obj(spec, "model", "spec", required=True)
    _known(m, path, ModelSpec)
    return ModelSpec(
        uri=_uri(m, "uri", path),
        version=_int(m, "version", path, default=1, minimum=1, maximum=MAX_VERSION),
        name=_str(m, "name", path, default=name, max_length=MAX_NAME_LENGTH, pattern=DNS1123_LABEL,
                  hint="use a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a "
                       "letter or digit, at most 63 characters") or name,
        storage_secret=_str(m, "storageSecret", path, default=None, max_length=253, pattern=DNS1123_SUBDOMAIN,
                            hint="use the name of a Secret in this namespace"),
    )


def _parse_optimization(spec: Mapping, model: ModelSpec) -> OptimizationSpec | None:
    path = "spec.optimization"
    o = _obj(spec, "optimization", "spec")
    if o is None:
        return None
    _known(o, path, OptimizationSpec)
    pruning = quantization = dataset = None
    if (p := _obj(o, "pruning", path)) is not None:
        _known(p, f"{path}.pruning", PruningSpec)
        pruning = PruningSpec(
            sparsity=_num(p, "sparsity", f"{path}.pruning", minimum=0.0, maximum=1.0, exclusive=True),
            fine_tune_epochs=_int(p, "fineTuneEpochs", f"{path}.pruning", default=0, minimum=0, maximum=1000))
    if (q := _obj(o, "quantization", path)) is not None:
        qpath = f"{path}.quantization"
        _known(q, qpath, QuantizationSpec)
        mode = _str(q, "mode", qpath, default="dynamic")
        if mode not in QUANTIZATION_MODES:
            raise SpecError(f"{qpath}.mode", f"unknown mode {mode!r}: use one of {', '.join(QUANTIZATION_MODES)}")
        epochs = _int(q, "fineTuneEpochs", qpath, default=None, minimum=1, maximum=1000)
        if epochs is not None and mode != "qat":
            raise SpecError(f"{qpath}.fineTuneEpochs", "applies to mode qat only: remove it, or set mode: qat")
        quantization = QuantizationSpec(mode=mode, fine_tune_epochs=epochs or (1 if mode == "qat" else 0))
    if (d := _obj(o, "dataset", path)) is not None:
        _known(d, f"{path}.dataset", DatasetSpec)
        dataset = DatasetSpec(uri=_uri(d, "uri", f"{path}.dataset"))
    g = _obj(o, "gates", path) or {}
    _known(g, f"{path}.gates", GatesSpec)
    gates = GatesSpec(
        max_accuracy_drop=_num(g, "maxAccuracyDrop", f"{path}.gates", default=None, minimum=0.0, maximum=1.0),
        min_compression=_num(g, "minCompression", f"{path}.gates", default=None, minimum=1.0, maximum=1000.0))
    search = _parse_search(o, path)
    export = None
    if (e := _obj(o, "export", path)) is not None:
        _known(e, f"{path}.export", ExportSpec)
        export = ExportSpec(onnx=_bool(e, "onnx", f"{path}.export", default=False))
    if search is not None and (pruning is not None or quantization is not None):
        raise SpecError(f"{path}.search", SEARCH_REPLACES_MESSAGE)
    output_uri = _uri(o, "outputUri", path)
    opt = OptimizationSpec(
        output_uri=output_uri, pruning=pruning, quantization=quantization, dataset=dataset, gates=gates,
        search=search, export=export,
        resources=_resources(o, "resources", path),
        node_selector=_string_map(o, "nodeSelector", path, labels=True),
        tolerations=_tolerations(o, "tolerations", path),
        backoff_limit=_int(o, "backoffLimit", path, default=1, minimum=0, maximum=20),
        active_deadline_seconds=_int(o, "activeDeadlineSeconds", path, default=7200, minimum=60,
                                     maximum=MAX_DEADLINE_SECONDS),
        ttl_seconds_after_finished=_int(o, "ttlSecondsAfterFinished", path, default=None, minimum=0,
                                        maximum=MAX_TTL_SECONDS),
    )
    # Cross-field rules: the same as the CRD's CEL rules, with the same field paths.
    if search is not None and search.time_budget_seconds >= opt.active_deadline_seconds:
        raise SpecError(f"{path}.search.timeBudgetSeconds",
                        f"must be below {path}.activeDeadlineSeconds ({opt.active_deadline_seconds}), which ends "
                        "the Job: lower the budget or raise the deadline")
    if dataset is None:
        if quantization is not None and quantization.mode in QUANTIZATION_MODES_NEEDING_DATA:
            raise SpecError(f"{path}.quantization.mode",
                            f"mode {quantization.mode} needs a dataset: set {path}.dataset.uri "
                            f"(an .npz with x_train, y_train, x_val, y_val) or use mode dynamic or float16")
        if pruning is not None and pruning.fine_tune_epochs > 0:
            raise SpecError(f"{path}.pruning.fineTuneEpochs",
                            f"fine-tuning needs a dataset: set {path}.dataset.uri or fineTuneEpochs: 0")
        needs = [m for m in search.modes if m in QUANTIZATION_MODES_NEEDING_DATA] if search else []
        if needs:
            raise SpecError(f"{path}.search.modes", f"{', '.join(needs)} need a dataset: set {path}.dataset.uri "
                                                    "or search modes dynamic, float16 and none only")
        if search is not None and search.fine_tune_epochs > 0:
            raise SpecError(f"{path}.search.fineTuneEpochs",
                            f"fine-tuning needs a dataset: set {path}.dataset.uri or fineTuneEpochs: 0")
        if gates.max_accuracy_drop is not None:
            raise SpecError(f"{path}.gates.maxAccuracyDrop",
                            f"the accuracy gate needs a dataset to measure accuracy: set {path}.dataset.uri "
                            f"or remove maxAccuracyDrop")
    if overlaps(output_uri, model.uri):
        raise SpecError(f"{path}.outputUri", OUTPUT_OVERLAP_MESSAGE.format(other="spec.model.uri"))
    if dataset is not None and overlaps(output_uri, dataset.uri):
        raise SpecError(f"{path}.outputUri", OUTPUT_OVERLAP_MESSAGE.format(other="spec.optimization.dataset.uri"))
    return opt


def _parse_search(o: Mapping, path: str) -> SearchSpec | None:
    if (x := _obj(o, "search", path)) is None:
        return None
    spath = f"{path}.search"
    _known(x, spath, SearchSpec)
    sparsities = _get(x, "sparsities", spath, list, "a list of sparsities, e.g. [0, 0.5, 0.8]")
    modes = _get(x, "modes", spath, list, "a list of quantization modes, e.g. [dynamic, int8]")
    for key, values in (("sparsities", sparsities), ("modes", modes)):
        if not 1 <= len(values) <= MAX_SEARCH_AXIS or len(set(map(repr, values))) != len(values):
            raise SpecError(f"{spath}.{key}", f"must list 1 to {MAX_SEARCH_AXIS} different values")
    for i, value in enumerate(sparsities):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise SpecError(f"{spath}.sparsities[{i}]", f"must be a number in [0, 1), got {value!r}")
    for i, mode in enumerate(modes):
        if mode not in QUANTIZATION_MODES:
            raise SpecError(f"{spath}.modes[{i}]", f"unknown mode {mode!r}: use one of {', '.join(QUANTIZATION_MODES)}")
    objective = _str(x, "objective", spath, default="size")
    if objective not in SEARCH_OBJECTIVES:
        raise SpecError(f"{spath}.objective", f"unknown objective {objective!r}: use one of "
                                              f"{', '.join(SEARCH_OBJECTIVES)}")
    return SearchSpec(
        sparsities=tuple(float(v) for v in sparsities), modes=tuple(modes), objective=objective,
        time_budget_seconds=_int(x, "timeBudgetSeconds", spath, default=1800, minimum=60, maximum=86400),
        fine_tune_epochs=_int(x, "fineTuneEpochs", spath, default=0, minimum=0, maximum=1000))


def _parse_serving(spec: Mapping, images: ServingImages) -> ServingSpec:
    path = "spec.serving"
    s = _obj(spec, "serving", "spec") or {}
    _known(s, path, ServingSpec)
    batching = None
    if (b := _obj(s, "batching", path)) is not None:
        bpath = f"{path}.batching"
        _known(b, bpath, BatchingSpec)
        batching = BatchingSpec(
            max_batch_size=_int(b, "maxBatchSize", bpath, default=32, minimum=1, maximum=65536),
            batch_timeout_micros=_int(b, "batchTimeoutMicros", bpath, default=2000, minimum=0, maximum=10_000_000),
            max_enqueued_batches=_int(b, "maxEnqueuedBatches", bpath, default=100, minimum=1, maximum=1_000_000),
            num_batch_threads=_int(b, "numBatchThreads", bpath, default=4, minimum=1, maximum=1024),
            auto=_bool(b, "auto", bpath, default=False),
            max_latency_ms=_int(b, "maxLatencyMs", bpath, default=None, minimum=1, maximum=60_000))
        # With auto, maxBatchSize and batchTimeoutMicros are chosen (the CRD defaults them, so they cannot be
        # refused when present).
        if batching.auto and batching.max_latency_ms is None:
                raise SpecError(f"{bpath}.maxLatencyMs", "auto: true needs a latency budget to choose within: "
                                                         "set maxLatencyMs (milliseconds per request)")
    gpus = _int(s, "gpus", path, default=0, minimum=0)
    if gpus > MAX_GPUS:
        raise SpecError(f"{path}.gpus", f"{GPUS_MESSAGE} (got {gpus})")
    if batching is not None and batching.auto and gpus > 0:
        raise SpecError(f"{path}.batching.auto", BATCHING_AUTO_GPU_MESSAGE)
    runtime = _str(s, "runtime", path, default="tensorflow")
    if runtime not in RUNTIMES:
        raise SpecError(f"{path}.runtime", f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
    if runtime == "tflite" and gpus > 0:
        raise SpecError(f"{path}.runtime", TFLITE_GPU_MESSAGE)
    image = _str(s, "image", path, default="", max_length=512, pattern=IMAGE_PATTERN,
                 hint="use an image reference such as tensorflow/serving:2.21.0 or "
                      "registry.example.com:5000/serving@sha256:<digest>") or (images.gpu if gpus > 0 else images.cpu)
    return ServingSpec(
        image=image,
        replicas=_int(s, "replicas", path, default=1, minimum=0, maximum=1000),
        gpus=gpus,
        node_selector=_string_map(s, "nodeSelector", path, labels=True),
        tolerations=_tolerations(s, "tolerations", path),
        affinity=_raw_object(s, "affinity", path, "an object (a Kubernetes Affinity)"),
        resources=_resources(s, "resources", path),
        batching=batching,
        runtime=runtime,
    )


def _parse_metrics(a: Mapping, path: str) -> tuple:
    metrics = _get(a, "metrics", path, list, "a list of autoscaling/v2 MetricSpec objects", [])
    out = []
    for i, m in enumerate(metrics):
        mpath = f"{path}.metrics[{i}]"
        if not isinstance(m, dict):
            raise SpecError(mpath, "must be an autoscaling/v2 MetricSpec object")
        mtype = _str(m, "type", mpath)
        if mtype not in METRIC_TYPES:
            raise SpecError(f"{mpath}.type", f"unknown metric type {mtype!r}: use one of {', '.join(METRIC_TYPES)}")
        # autoscaling/v2 keys the source by the type name in lowerCamelCase (Resource -> resource, ...).
        source = mtype[0].lower() + mtype[1:]
        if not isinstance(m.get(source), dict):
            raise SpecError(f"{mpath}.{source}", f"a metric of type {mtype} needs a {source} object")
        out.append(dict(m))
    return tuple(out)


def _parse_autoscaling(spec: Mapping) -> AutoscalingSpec | None:
    path = "spec.autoscaling"
    a = _obj(spec, "autoscaling", "spec")
    if a is None:
        return None
    _known(a, path, AutoscalingSpec)
    lo = _int(a, "minReplicas", path, default=1, minimum=1, maximum=1000)
    hi = _int(a, "maxReplicas", path, minimum=1, maximum=1000)
    if hi < lo:
        raise SpecError(f"{path}.maxReplicas", f"must be >= minReplicas ({lo}), got {hi}")
    return AutoscalingSpec(
        min_replicas=lo, max_replicas=hi,
        target_cpu_utilization=_int(a, "targetCPUUtilization", path, default=70, minimum=1, maximum=1000),
        metrics=_parse_metrics(a, path))


def _parse_slo(m: Mapping, path: str) -> SLOSpec | None:
    if (o := _obj(m, "slo", path)) is None:
        return None
    spath = f"{path}.slo"
    _known(o, spath, SLOSpec)
    return SLOSpec(
        max_p99_latency_ms=_int(o, "maxP99LatencyMs", spath, default=None, minimum=1, maximum=MAX_SLO_LATENCY_MS),
        max_error_ratio=_num(o, "maxErrorRatio", spath, default=None, minimum=0.0, maximum=1.0),
        min_requests_per_second=_num(o, "minRequestsPerSecond", spath, default=1.0, minimum=0.0,
                                     maximum=MAX_SLO_RATE),
        window_seconds=_int(o, "windowSeconds", spath, default=120, minimum=MIN_SLO_WINDOW,
                            maximum=MAX_SLO_WINDOW))


def _parse_monitoring(spec: Mapping) -> MonitoringSpec:
    path = "spec.monitoring"
    m = _obj(spec, "monitoring", "spec") or {}
    _known(m, path, MonitoringSpec)
    monitoring = MonitoringSpec(
        interval_seconds=_int(m, "intervalSeconds", path, default=30, minimum=5, maximum=3600),
        failure_threshold=_int(m, "failureThreshold", path, default=3, minimum=1, maximum=100),
        prometheus=_bool(m, "prometheus", path, default=True),
        rollback=_bool(m, "rollback", path, default=True),
        slo=_parse_slo(m, path))
    # Cross-field rules: the same as the CRD's CEL rules, with the same field paths.
    if monitoring.slo is not None and not monitoring.prometheus:
        raise SpecError(f"{path}.slo", SLO_NEEDS_PROMETHEUS_MESSAGE)
    if monitoring.slo is not None and monitoring.slo.window_seconds < monitoring.interval_seconds:
        raise SpecError(f"{path}.slo.windowSeconds",
                        f"must be >= {path}.intervalSeconds ({monitoring.interval_seconds}), got "
                        f"{monitoring.slo.window_seconds}: {SLO_WINDOW_MESSAGE}")
    return monitoring


def _parse_steps(r: Mapping, path: str) -> tuple:
    steps = _get(r, "steps", path, list, "a list of {weight, durationSeconds}", [])
    if len(steps) > MAX_CANARY_STEPS:
        raise SpecError(f"{path}.steps", f"must list at most {MAX_CANARY_STEPS} steps, got {len(steps)}")
    out = []
    for i, step in enumerate(steps):
        spath = f"{path}.steps[{i}]"
        if not isinstance(step, dict):
            raise SpecError(spath, "must be an object {weight, durationSeconds}")
        _known(step, spath, CanaryStep)
        out.append(CanaryStep(
            weight=_int(step, "weight", spath, minimum=1, maximum=99),
            duration_seconds=_int(step, "durationSeconds", spath, minimum=MIN_STEP_SECONDS,
                                  maximum=MAX_STEP_SECONDS)))
        if i and out[i].weight <= out[i - 1].weight:
            raise SpecError(f"{spath}.weight", f"must be above the previous step's weight ({out[i - 1].weight}), "
                                               f"got {out[i].weight}: a canary only grows until it is promoted")
    return tuple(out)


def _parse_rollout(spec: Mapping) -> RolloutSpec:
    path = "spec.rollout"
    r = _obj(spec, "rollout", "spec") or {}
    _known(r, path, RolloutSpec)
    strategy = _str(r, "strategy", path, default="rolling")
    if strategy not in ROLLOUT_STRATEGIES:
        raise SpecError(f"{path}.strategy", f"unknown strategy {strategy!r}: use one of "
                                            f"{', '.join(ROLLOUT_STRATEGIES)}")
    return RolloutSpec(
        progress_deadline_seconds=_int(r, "progressDeadlineSeconds", path, default=600, minimum=30, maximum=86400),
        strategy=strategy, steps=_parse_steps(r, path),
        max_latency_ratio=_num(r, "maxLatencyRatio", path, default=1.2, minimum=1.0, maximum=100.0),
        max_error_ratio_increase=_num(r, "maxErrorRatioIncrease", path, default=0.01, minimum=0.0, maximum=1.0))


def _check_canary(rollout: RolloutSpec, monitoring: MonitoringSpec, serving: ServingSpec,
                  autoscaling: AutoscalingSpec | None) -> None:
    """Cross-field rules of strategy canary: the same as the CRD's CEL rules, with the same field paths."""
    if rollout.strategy != "canary":
        return
    if monitoring.slo is None:
        raise SpecError("spec.rollout.strategy", "canary " + CANARY_NEEDS_SLO_MESSAGE)
    if not rollout.steps:
        raise SpecError("spec.rollout.steps", "strategy canary " + CANARY_NEEDS_STEPS_MESSAGE)
    if autoscaling is None and serving.replicas < 2:
        raise SpecError("spec.serving.replicas", f"strategy canary {CANARY_REPLICAS_MESSAGE} (got "
                                                 f"{serving.replicas})")
    window = monitoring.slo.window_seconds
    for i, step in enumerate(rollout.steps):
        if step.duration_seconds < window:
            raise SpecError(f"spec.rollout.steps[{i}].durationSeconds",
                            f"must be >= spec.monitoring.slo.windowSeconds ({window}), got {step.duration_seconds}: "
                            "a step's verdict covers one window, which must lie within the step; lengthen the "
                            "step or shorten the window")


def parse(body: Mapping[str, Any], images: ServingImages = DEFAULT_IMAGES) -> ModelDeploymentSpec:
    """Parse a whole ModelDeployment object into a defaulted, validated `ModelDeploymentSpec`.

    Raises `SpecError` naming the first offending field (full path) and the fix.
    """
    if not isinstance(body, Mapping):
        raise SpecError("", "a ModelDeployment must be an object")
    meta = body.get("metadata") or {}
    if not isinstance(meta, Mapping):
        raise SpecError("metadata", f"must be an object, got {type(meta).__name__}")
    name = meta.get("name") or ""
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not re.fullmatch(DNS1035_LABEL, name):
        raise SpecError("metadata.name", f"{name!r} is not valid: use a DNS-1035 label (lower-case letters, digits "
                                         f"and '-', starting with a letter, at most 63 characters), because it "
                                         f"names the Service and the other children")
    spec = body.get("spec")
    if not isinstance(spec, Mapping):
        raise SpecError("spec", "is required: a ModelDeployment needs at least spec.model.uri")
    _known(spec, "spec", ModelDeploymentSpec)
    model = _parse_model(spec, name)
    optimization = _parse_optimization(spec, model)
    if optimization is None and re.fullmatch(KERAS_FILE_PATTERN, model.uri.lower()):
        raise SpecError("spec.model.uri", KERAS_AS_IS_MESSAGE)
    serving = _parse_serving(spec, images)
    if optimization is None and serving.runtime == "auto":
        raise SpecError("spec.serving.runtime", "auto " + AUTO_NEEDS_OPTIMIZATION)
    if optimization is None and serving.batching is not None and serving.batching.auto:
        raise SpecError("spec.serving.batching.auto", "true " + AUTO_NEEDS_OPTIMIZATION + " (auto: false)")
    if serving.runtime == "tflite" and (optimization is None or optimization.quantization is None
                                        or optimization.quantization.mode not in TFLITE_QUANTIZATION_MODES):
        raise SpecError("spec.serving.runtime", TFLITE_MODE_MESSAGE)
    autoscaling, monitoring, rollout = _parse_autoscaling(spec), _parse_monitoring(spec), _parse_rollout(spec)
    _check_canary(rollout, monitoring, serving, autoscaling)
    return ModelDeploymentSpec(
        name=name,
        namespace=meta.get("namespace") or "default",
        model=model,
        serving=serving,
        optimization=optimization,
        autoscaling=autoscaling,
        monitoring=monitoring,
        rollout=rollout,
    )


def optimization_hash(spec: ModelDeploymentSpec) -> str:
    """8 hex characters identifying what an optimization Job does (defaulted optimization spec + model URI).

    Computed on defaulted values, so writing a default explicitly does not start a new Job.
    """
    payload = {"model": spec.model.uri,
               "optimization": dataclasses.asdict(spec.optimization) if spec.optimization else None}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(canonical.encode()).hexdigest()[:8]


def source_uri(spec: ModelDeploymentSpec, version: int) -> str:
    """Where version N is pulled from: `<outputUri>/<N>` when optimized, else the model URI as it is."""
    if spec.optimization is None:
        return spec.model.uri
    return f"{spec.optimization.output_uri.rstrip('/')}/{version}"
