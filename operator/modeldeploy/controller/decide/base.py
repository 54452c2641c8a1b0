"""What decide's phases share: the observation in (`Observed`), the plan out (`Plan`), the enums of the states
the phases compare, the condition accumulator and the readers of the stored status. Pure.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from modeldeploy.api import status as st
from modeldeploy.api.spec import ModelDeploymentSpec, source_uri
from modeldeploy.controller import canary as cn
from modeldeploy.controller import slo as slomod
from modeldeploy.controller.observe import DeploymentView, JobView
from modeldeploy.resources.deployment import ServingTarget

# TF Serving's state of a model version that answers requests; None: not probed, which is no evidence against it.
SERVES = (None, "AVAILABLE")


class OptimizationState(str, Enum):
    """Where the optimization of the requested version stands (decide's own; never written to status)."""
    NONE = "none"              # no spec.optimization: the model is served as it is
    PUBLISHED = "published"    # the version is published with an artefact for the runtime the spec serves it with
    WAIT = "wait"              # its Job runs, or is to be created
    FAILED = "failed"          # the Job or a gate failed, or the version has no artefact for the runtime


class HealthState(str, Enum):
    """status.health.state. Written as `.value`: the API keeps plain strings."""
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class Observed:
    """Everything the reconciler read for one ModelDeployment (plain data)."""
    generation: int
    status: dict
    now: str                                   # RFC 3339, the only clock the decisions see
    job: JobView | None = None                 # the Job for (requested version, optimization hash), if it exists
    published: bool | None = None              # storage: is the requested version already published? None: unknown
    published_report: dict | None = None       # report.json of a version published earlier / a Job without report
    deployment: DeploymentView = DeploymentView()
    pods: tuple = ()                           # serving pods (dicts)
    model_state: str | None = None             # TF Serving's model state, None when unreachable
    model_message: str = ""                    # TF Serving's error message for that state, if any
    recorded_last_good: ServingTarget | None = None   # the rollback target recorded on the Service
    interval_check: bool = False               # a scheduled health check: counts towards failureThreshold
    serving_metrics: slomod.Figures | None = None   # TF Serving's figures over the SLO window; None: not measured
    canary_deployment: DeploymentView = DeploymentView()   # the canary Deployment (strategy canary)
    canary_metrics: slomod.Figures | None = None    # the canary pods' figures (serving_metrics: the stable pods')


@dataclass
class Plan:
    """What to do. `status` is the whole new status; compare it with the stored one before writing."""
    status: dict
    create_job: bool = False
    target: ServingTarget | None = None
    serving: ModelDeploymentSpec | None = None      # the spec with what auto chose (batching) filled in
    last_good: ServingTarget | None = None          # to record on the Service (rollback target)
    rolled_back: bool = False
    events: list = field(default_factory=list)      # (type, reason, message)
    canary: cn.CanaryPlan | None = None             # running: the canary Deployment to run beside the serving one


def cond(conditions, type_: str) -> dict:
    """The condition of this type, or an empty dict."""
    return st.get_condition(conditions, type_) or {}


def latched(conditions, type_: str, reasons, generation: int, status: str) -> dict | None:
    """A condition that already recorded a failure of this very generation."""
    c = cond(conditions, type_)
    if c.get("status") == status and c.get("reason") in reasons and c.get("observedGeneration") == generation:
        return c
    return None


def minimum_ready(spec: ModelDeploymentSpec) -> int:
    """Ready replicas the model needs to count as served: the HPA's minimum, else spec.serving.replicas."""
    return spec.autoscaling.min_replicas if spec.autoscaling is not None else spec.serving.replicas


def target_from_status(status: dict) -> ServingTarget | None:
    """The target status.serving last recorded (None until one was deployed)."""
    serving, model = status.get("serving") or {}, status.get("model") or {}
    if serving.get("version") and serving.get("image") and model.get("uri"):
        return ServingTarget(int(serving["version"]), serving["image"], model["uri"],
                             serving.get("runtime") or "tensorflow")
    return None


def last_good_target(spec: ModelDeploymentSpec, status: dict, recorded: ServingTarget | None = None) \
        -> ServingTarget | None:
    """The rollback target: lastGoodVersion with the image and URI that served it.

    From status.model.lastGood{Image,Uri} when the CRD has them, else from the last-good annotation
    (`recorded`, from the Service's annotation), else the spec's image and URI for that version.
    """
    model = status.get("model") or {}
    version = model.get("lastGoodVersion")
    if not version:
        return None
    version = int(version)
    if recorded is not None and recorded.version == version:
        image, uri, runtime = recorded.image, recorded.uri, recorded.runtime
    else:
        image, uri, runtime = spec.serving.image, source_uri(spec, version), "tensorflow"
    return ServingTarget(version, model.get("lastGoodImage") or image, model.get("lastGoodUri") or uri,
                         model.get("lastGoodRuntime") or runtime)


class Conditions:
    """Accumulates condition changes against the stored list (lastTransitionTime kept unless status flips)."""

    def __init__(self, stored, generation: int, now: str):
        self.items, self.generation, self.now = [dict(c) for c in stored or ()], generation, now

    def set(self, type_: str, status, reason: str, message: str) -> None:
        self.items, _ = st.set_condition(self.items, type_, status, reason, message, self.generation, self.now)
