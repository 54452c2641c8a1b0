"""The ModelDeployment spec as typed, immutable, defaulted values, parsed from the one declaration of the API.

The spec is declared once, as pydantic dataclasses (model_optimization.py, model_serving.py, model_rollout.py
and `ModelDeploymentSpec` below, built from fields.py and k8s_types.py); the parser here, the CRD's
openAPIV3Schema (schema.py, crd.py) and docs/api.md are generated from that declaration. Everything else
(builders, reconciler, monitor, `modeldeploy render`) takes a `ModelDeploymentSpec` from `parse()` and never
reads the raw body.

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

The values are frozen dataclasses (pydantic's), so `dataclasses.replace()` and `asdict()` work on them;
constructing one in code takes the values as given, only `parse()` checks them.

Optional sub-specs are `None` when absent: `optimization` (serve the model as it is, no Job), `autoscaling`
(fixed replicas, no HPA), `serving.batching` (TF Serving batching off), `optimization.pruning`,
`optimization.quantization`, `optimization.dataset`, `monitoring.slo` (no TF Serving metrics are scraped).
`serving`, `monitoring`, `rollout` and `optimization.gates` are always present with defaults.

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
import os
import re
from typing import Any, Mapping

import pydantic

from modeldeploy.api import limits as L
from modeldeploy.api.fields import (ApiObject, Invalid, Rule, api_object, field, is_object, item_type, leaf_type,
                                    meta_of, what_of)
from modeldeploy.api.limits import (API_GROUP, API_VERSION, DNS1123_SUBDOMAIN, KIND, PLURAL, RUNTIMES,
                                    TF_SERVING_VERSION, TFLITE_QUANTIZATION_MODES)
from modeldeploy.api.model_optimization import (DatasetSpec, ExportSpec, GatesSpec, ModelSpec, OptimizationSpec,
                                                PruningSpec, QuantizationSpec, SearchSpec)
from modeldeploy.api.model_rollout import SLO_WINDOW, CanaryStep, MonitoringSpec, RolloutSpec, SLOSpec
from modeldeploy.api.model_serving import AutoscalingSpec, BatchingSpec, ServingSpec

__all__ = [  # the constants other modules read here; the rest are in limits.py
    "API_GROUP", "API_VERSION", "DNS1123_SUBDOMAIN", "KIND", "PLURAL", "RUNTIMES", "TF_SERVING_VERSION",
    "TFLITE_QUANTIZATION_MODES",
    "AutoscalingSpec", "BatchingSpec", "CanaryStep", "DatasetSpec", "ExportSpec", "GatesSpec", "ModelSpec",
    "MonitoringSpec", "OptimizationSpec", "PruningSpec", "QuantizationSpec", "RolloutSpec", "SLOSpec",
    "SearchSpec", "ServingSpec", "ModelDeploymentSpec", "SpecError", "ServingImages", "DEFAULT_IMAGES",
    "images_from_env", "parse", "optimization_hash", "source_uri", "overlaps",
]


class SpecError(ValueError):
    """A ModelDeployment that cannot be served as written. `field` is the full path, `message` the fix."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclasses.dataclass(frozen=True)
class ServingImages:
    """TF Serving images: `cpu` when serving.gpus == 0, `gpu` otherwise."""
    cpu: str = f"tensorflow/serving:{TF_SERVING_VERSION}"
    gpu: str = f"tensorflow/serving:{TF_SERVING_VERSION}-gpu"


DEFAULT_IMAGES = ServingImages()


def images_from_env(environ: Mapping[str, str] = os.environ) -> ServingImages:
    """Images overridden by MODELDEPLOY_SERVING_IMAGE / MODELDEPLOY_SERVING_IMAGE_GPU (air-gapped mirrors)."""
    return ServingImages(cpu=environ.get("MODELDEPLOY_SERVING_IMAGE") or DEFAULT_IMAGES.cpu,
                         gpu=environ.get("MODELDEPLOY_SERVING_IMAGE_GPU") or DEFAULT_IMAGES.gpu)


def overlaps(a: str, b: str) -> bool:
    """Whether two storage locations are the same or one lies inside the other (URIs have no '//')."""
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


def _overlaps_cel(a: str, b: str) -> str:
    """CEL for overlaps(a, b)."""
    def slash(x):
        return f"({x}.endsWith('/') ? {x} : {x} + '/')"
    return f"({slash(a)}.startsWith({slash(b)}) || {slash(b)}.startsWith({slash(a)}))"


# Cross-field rules of the whole spec: each CEL rule (checked at admission) beside the same rule in Python.

def _output_not_model(s: ModelDeploymentSpec) -> None:
    if s.optimization is not None and overlaps(s.optimization.output_uri, s.model.uri):
        raise Invalid(L.OUTPUT_OVERLAP_MESSAGE.format(other="spec.model.uri"), ".optimization.outputUri")


def _output_not_dataset(s: ModelDeploymentSpec) -> None:
    o = s.optimization
    if o is not None and o.dataset is not None and overlaps(o.output_uri, o.dataset.uri):
        raise Invalid(L.OUTPUT_OVERLAP_MESSAGE.format(other="spec.optimization.dataset.uri"),
                      ".optimization.outputUri")


def _keras_needs_optimization(s: ModelDeploymentSpec) -> None:
    if s.optimization is None and re.fullmatch(L.KERAS_FILE_PATTERN, s.model.uri.lower()):
        raise Invalid(L.KERAS_AS_IS_MESSAGE, ".model.uri")


def _tflite_needs_its_mode(s: ModelDeploymentSpec) -> None:
    q = s.optimization.quantization if s.optimization else None
    if s.serving.runtime == "tflite" and (q is None or q.mode not in TFLITE_QUANTIZATION_MODES):
        raise Invalid(L.TFLITE_MODE_MESSAGE, ".serving.runtime")


def _auto_runtime_needs_optimization(s: ModelDeploymentSpec) -> None:
    if s.optimization is None and s.serving.runtime == "auto":
        raise Invalid("auto " + L.AUTO_NEEDS_OPTIMIZATION, ".serving.runtime")


def _auto_batching_needs_optimization(s: ModelDeploymentSpec) -> None:
    if s.optimization is None and s.serving.batching is not None and s.serving.batching.auto:
        raise Invalid("true " + L.AUTO_NEEDS_OPTIMIZATION + " (auto: false)", ".serving.batching.auto")


def _canary_needs_slo(s: ModelDeploymentSpec) -> None:
    if s.rollout.strategy == "canary" and s.monitoring.slo is None:
        raise Invalid("canary " + L.CANARY_NEEDS_SLO_MESSAGE, ".rollout.strategy")


def _canary_needs_steps(s: ModelDeploymentSpec) -> None:
    if s.rollout.strategy == "canary" and not s.rollout.steps:
        raise Invalid("strategy canary " + L.CANARY_NEEDS_STEPS_MESSAGE, ".rollout.steps")


def _canary_needs_replicas(s: ModelDeploymentSpec) -> None:
    if s.rollout.strategy == "canary" and s.autoscaling is None and s.serving.replicas < 2:
        raise Invalid(f"strategy canary {L.CANARY_REPLICAS_MESSAGE} (got {s.serving.replicas})", ".serving.replicas")


def _canary_steps_hold_a_window(s: ModelDeploymentSpec) -> None:
    if s.rollout.strategy != "canary" or s.monitoring.slo is None:
        return
    window = s.monitoring.slo.window_seconds
    for i, step in enumerate(s.rollout.steps):
        if step.duration_seconds < window:
            raise Invalid(f"must be >= spec.monitoring.slo.windowSeconds ({window}), got {step.duration_seconds}: "
                          "a step's verdict covers one window, which must lie within the step; lengthen the step or "
                          "shorten the window", f".rollout.steps[{i}].durationSeconds")


_CANARY = "has(self.rollout) && has(self.rollout.strategy) && self.rollout.strategy == 'canary'"
_WINDOW = f"(has(self.monitoring.slo.windowSeconds) ? self.monitoring.slo.windowSeconds : {SLO_WINDOW})"


@api_object
class ModelDeploymentSpec(ApiObject):
    """A parsed ModelDeployment: `name`/`namespace` come from metadata, everything else from spec."""
    DESCRIPTION = ("What to serve and how. Unknown fields are pruned by the API server, and rejected with their "
                   "name by clients using strict field validation (kubectl's default).")
    # The parser checks these in the hand-written parser's order (priority); the CRD lists them as written.
    RULES = (
        Rule("!has(self.optimization) || !" + _overlaps_cel("self.optimization.outputUri", "self.model.uri"),
             "spec.optimization.outputUri " + L.OUTPUT_OVERLAP_MESSAGE.format(other="spec.model.uri"),
             _output_not_model, field_path=".optimization.outputUri"),
        Rule("!has(self.optimization) || !has(self.optimization.dataset) || !"
             + _overlaps_cel("self.optimization.outputUri", "self.optimization.dataset.uri"),
             "spec.optimization.outputUri " + L.OUTPUT_OVERLAP_MESSAGE.format(other="spec.optimization.dataset.uri"),
             _output_not_dataset, field_path=".optimization.outputUri"),
        Rule(f"has(self.optimization) || !self.model.uri.lowerAscii().matches('{L.KERAS_FILE_PATTERN}')",
             f"spec.model.uri {L.KERAS_AS_IS_MESSAGE}", _keras_needs_optimization, field_path=".model.uri"),
        Rule("!has(self.serving) || !has(self.serving.runtime) || self.serving.runtime != 'tflite' || "
             "(has(self.optimization) && has(self.optimization.quantization) && "
             "self.optimization.quantization.mode in " + str(list(TFLITE_QUANTIZATION_MODES)) + ")",
             "spec.serving.runtime " + L.TFLITE_MODE_MESSAGE, _tflite_needs_its_mode, field_path=".serving.runtime",
             priority=1),
        Rule("has(self.optimization) || !has(self.serving) || !has(self.serving.runtime) || "
             "self.serving.runtime != 'auto'", "spec.serving.runtime auto " + L.AUTO_NEEDS_OPTIMIZATION,
             _auto_runtime_needs_optimization, field_path=".serving.runtime"),
        Rule("has(self.optimization) || !has(self.serving) || !has(self.serving.batching) || "
             "!has(self.serving.batching.auto) || !self.serving.batching.auto",
             "spec.serving.batching.auto true " + L.AUTO_NEEDS_OPTIMIZATION + " (auto: false)",
             _auto_batching_needs_optimization, field_path=".serving.batching.auto"),
        Rule(f"!({_CANARY}) || (has(self.monitoring) && has(self.monitoring.slo))",
             "spec.rollout.strategy canary " + L.CANARY_NEEDS_SLO_MESSAGE, _canary_needs_slo,
             field_path=".rollout.strategy", priority=2),
        Rule(f"!({_CANARY}) || (has(self.rollout.steps) && size(self.rollout.steps) > 0)",
             "spec.rollout.steps: strategy canary " + L.CANARY_NEEDS_STEPS_MESSAGE, _canary_needs_steps,
             field_path=".rollout.steps", priority=2),
        Rule(f"!({_CANARY}) || has(self.autoscaling) || (has(self.serving) && has(self.serving.replicas) ? "
             f"self.serving.replicas : 1) >= 2",
             "spec.serving.replicas: strategy canary " + L.CANARY_REPLICAS_MESSAGE, _canary_needs_replicas,
             field_path=".serving.replicas", priority=2),
        # Static message: string(int) in a messageExpression has an unbounded cost estimate.
        Rule(f"!({_CANARY}) || !has(self.monitoring) || !has(self.monitoring.slo) || !has(self.rollout.steps) || "
             f"self.rollout.steps.all(s, s.durationSeconds >= {_WINDOW})",
             "spec.rollout.steps[].durationSeconds must be >= spec.monitoring.slo.windowSeconds: a step's verdict "
             "covers one window, which must lie within the step; lengthen the step or shorten the window",
             _canary_steps_hold_a_window, field_path=".rollout.steps", priority=2),
    )
    name: str = field("metadata.name.", context="name")
    namespace: str = field("metadata.namespace.", context="namespace")
    model: ModelSpec = field("The trained model and the version to serve.")
    optimization: OptimizationSpec | None = field(
        "Optimize the model in a Job before serving it: pruning, quantization and gates. Leave it out to serve the "
        "model as it is (no Job). Each version is published once under <outputUri>/<version>/.", None)
    serving: ServingSpec = field("The TensorFlow Serving Deployment (gRPC on 8500, REST on 8501) and its Service.",
                                 default_factory=ServingSpec, default_object=True)
    autoscaling: AutoscalingSpec | None = field(
        "Scale the serving Deployment with an autoscaling/v2 HorizontalPodAutoscaler. Leave it out for a fixed "
        "spec.serving.replicas.", None)
    monitoring: MonitoringSpec = field("Health checks of the serving pods and of TF Serving's model status, and "
                                       "service-level objectives from TF Serving's metrics.",
                                       default_factory=MonitoringSpec, default_object=True)
    rollout: RolloutSpec = field("How a new version rolls out.", default_factory=RolloutSpec, default_object=True)


_ADAPTER = pydantic.TypeAdapter(ModelDeploymentSpec)


def _declared(loc: tuple) -> tuple[tuple, Any]:
    """An error location's position in declaration order (list indices as they are), and the field it names."""
    cls, key, info = ModelDeploymentSpec, [], None
    for part in loc:
        if isinstance(part, int):
            key.append(part)
            continue
        fields = list(cls.__pydantic_fields__.values()) if cls is not None else []
        aliases = [f.alias for f in fields]
        if part not in aliases:
            key.append(len(aliases))
            break
        info = fields[aliases.index(part)]
        key.append(aliases.index(part))
        tp = leaf_type(info.annotation)
        tp = item_type(tp) or tp
        cls = tp if is_object(tp) else None
    return tuple(key), info


def _spec_error(exc: pydantic.ValidationError) -> SpecError:
    """The first error in declaration order (pydantic lists missing fields last), as the field path under `spec`
    and the declaration's message."""
    err = min(exc.errors(include_url=False), key=lambda e: _declared(e["loc"])[0])
    path = "spec" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, Invalid):
        return SpecError(path + cause.sub, cause.message)
    info = _declared(err["loc"])[1]
    if err["type"] == "missing" and info is not None:
        return SpecError(path, f"is required: set {what_of(info.annotation, meta_of(info))}")
    return SpecError(path, err["msg"])      # a case no declared check covers: pydantic's own words


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
    if not isinstance(name, str) or len(name) > L.MAX_NAME_LENGTH or not re.fullmatch(L.DNS1035_LABEL, name):
        raise SpecError("metadata.name", f"{name!r} is not valid: use a DNS-1035 label (lower-case letters, digits "
                                         f"and '-', starting with a letter, at most 63 characters), because it "
                                         f"names the Service and the other children")
    spec = body.get("spec")
    if not isinstance(spec, Mapping):
        raise SpecError("spec", "is required: a ModelDeployment needs at least spec.model.uri")
    context = {"name": name, "namespace": meta.get("namespace") or "default", "images": images}
    try:
        return _ADAPTER.validate_python(dict(spec), context=context)
    except pydantic.ValidationError as exc:
        raise _spec_error(exc) from None


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
