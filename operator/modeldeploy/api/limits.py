"""Constants of the ModelDeployment API: names, bounds, patterns and the fixes that error messages suggest.

Shared by the declaration of the spec (fields.py, k8s_types.py, model_*.py), from which the parser, the CRD schema
and docs/api.md are generated. spec.py re-exports the few the rest of the operator reads.
"""
from __future__ import annotations

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

# Patterns the parser checks in Python and the CRD in CEL (both generated from the declaration), so both reject
# the same strings.
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
