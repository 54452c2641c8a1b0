"""Pure status helpers: conditions in the metav1.Condition shape, following kstatus (sigs.k8s.io/cli-utils).

Interface (stable):

- Condition types: `READY`, `OPTIMIZED`, `AVAILABLE`, `RECONCILING`, `STALLED`, `DEGRADED` (and `ALL_TYPES`).
- `Reason`: the reason vocabulary (CamelCase, metav1.Condition's reason pattern) of conditions and Events; use
  these, add new ones here. `EventType`: a core/v1 Event's type (Normal, Warning); `event(type, reason, message)`:
  one Event as the plain-string tuple the controller posts.
- `set_condition(conditions, type, status, reason, message, generation, now) -> (new_list, changed)`:
  returns a new list (the input is not mutated). `lastTransitionTime` moves only when `status` flips;
  `changed` is True only when status, reason, message or observedGeneration differ, so callers patch status
  only when something changed (zero writes while idle). `status` may be a bool or "True"/"False"/"Unknown";
  `now` is a datetime (UTC) or an RFC 3339 string: the clock is passed in, nothing here reads it.
- `get_condition(conditions, type)`, `is_true(conditions, type)`, `remove_condition(conditions, type)`.
- `phase(conditions) -> str`: the one-word `status.phase` for humans, derived from the conditions only.
- `timestamp(dt) -> str`: RFC 3339 with a Z, seconds precision, as the API server stores it; `parse_time(s)`
  and `seconds_between(a, b)` read such times back (the one place RFC 3339 is written and read).

kstatus rules the callers keep: `status.observedGeneration` = the object's metadata.generation once handled;
Reconciling=True while a Job or rollout runs; Stalled=True when progress needs a spec change; Ready=True only
when the requested version (or, with Degraded, the rolled-back one) serves on enough ready replicas.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from enum import Enum
from typing import Iterable

READY = "Ready"
OPTIMIZED = "Optimized"
AVAILABLE = "Available"
RECONCILING = "Reconciling"
STALLED = "Stalled"
DEGRADED = "Degraded"
ALL_TYPES = (READY, OPTIMIZED, AVAILABLE, RECONCILING, STALLED, DEGRADED)

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"

# Phases: a summary for `kubectl get`; tools must read conditions instead.
PHASE_PENDING = "Pending"
PHASE_OPTIMIZING = "Optimizing"
PHASE_DEPLOYING = "Deploying"
PHASE_READY = "Ready"
PHASE_DEGRADED = "Degraded"
PHASE_FAILED = "Failed"
PHASES = (PHASE_PENDING, PHASE_OPTIMIZING, PHASE_DEPLOYING, PHASE_READY, PHASE_DEGRADED, PHASE_FAILED)

# metav1.Condition validation (k8s.io/apimachinery): reason pattern and message length.
REASON_PATTERN = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
MAX_MESSAGE = 32768
MAX_REASON = 1024


class Reason:
    """Condition reasons. Grouped by the condition that mostly uses them; any condition may use any reason."""
    # Spec
    INVALID_SPEC = "InvalidSpec"
    NAME_CONFLICT = "NameConflict"                  # a child's name is taken by an object we do not control
    # Optimized
    NOT_REQUESTED = "NotRequested"                  # no spec.optimization: the model is served as it is
    OPTIMIZATION_PENDING = "OptimizationPending"
    JOB_RUNNING = "JobRunning"
    JOB_SUCCEEDED = "JobSucceeded"
    JOB_FAILED = "JobFailed"
    ACCURACY_GATE_FAILED = "AccuracyGateFailed"
    COMPRESSION_GATE_FAILED = "CompressionGateFailed"
    ALREADY_PUBLISHED = "AlreadyPublished"
    REPORT_UNREADABLE = "ReportUnreadable"
    RUNTIME_UNAVAILABLE = "RuntimeUnavailable"
    # Reconciling / rollout
    ROLLOUT_IN_PROGRESS = "RolloutInProgress"
    ROLLOUT_COMPLETE = "RolloutComplete"
    ROLLOUT_FAILED = "RolloutFailed"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    ROLLED_BACK = "RolledBack"
    RECONCILED = "Reconciled"
    # Available / Ready / Degraded (monitor)
    REPLICAS_READY = "ReplicasReady"
    REPLICAS_NOT_READY = "ReplicasNotReady"
    MINIMUM_REPLICAS_UNAVAILABLE = "MinimumReplicasUnavailable"
    CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
    OOM_KILLED = "OOMKilled"
    IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
    INIT_CONTAINER_FAILED = "InitContainerFailed"
    UNSCHEDULABLE = "Unschedulable"
    MODEL_AVAILABLE = "ModelAvailable"
    MODEL_NOT_AVAILABLE = "ModelNotAvailable"
    ENDPOINT_UNREACHABLE = "EndpointUnreachable"
    HEALTHY = "Healthy"
    AS_EXPECTED = "AsExpected"
    SCALED_TO_ZERO = "ScaledToZero"
    # Degraded (SLO, from TF Serving's metrics)
    SLO_VIOLATED = "SLOViolated"
    SLO_MET = "SLOMet"                              # Events only: the SLO holds again
    SLO_NO_VERDICT = "SLONoVerdict"                 # Events only: too few requests to judge
    # Canary rollouts (controller/canary.py)
    CANARY_PROGRESSING = "CanaryProgressing"        # Ready=False / Reconciling=True while a canary runs
    CANARY_HOLDING = "CanaryHolding"                # the step's duration passed without a verdict
    CANARY_SLO_VIOLATED = "CanarySLOViolated"       # the canary broke spec.monitoring.slo (rollback reason)
    CANARY_WORSE_THAN_STABLE = "CanaryWorseThanStable"   # the canary broke a margin (rollback reason)
    CANARY_FAILING = "CanaryFailing"                # the canary's pods failed or never became ready
    # Events only: transitions worth a line in `kubectl describe`, never a condition's reason
    JOB_STARTED = "JobStarted"
    ROLLOUT_STARTED = "RolloutStarted"
    ROLLOUT_COMPLETED = "RolloutCompleted"
    HEALTH_HEALTHY = "HealthHealthy"                # status.health.state became Healthy
    HEALTH_UNHEALTHY = "HealthUnhealthy"            # status.health.state became Unhealthy
    CANARY_STARTED = "CanaryStarted"
    CANARY_STEP_ADVANCED = "CanaryStepAdvanced"
    CANARY_PROMOTED = "CanaryPromoted"
    CANARY_CANCELLED = "CanaryCancelled"


class EventType(str, Enum):
    """A core/v1 Event's type. Members are str, but f-strings and str() give "EventType.NORMAL" on Python 3.11:
    pass `.value` wherever the type leaves as text."""
    NORMAL = "Normal"
    WARNING = "Warning"


def event(type_: EventType, reason: str, message: str) -> tuple[str, str, str]:
    """One Event of a transition, as plain strings: (type, reason, message)."""
    return type_.value, reason, message


def timestamp(now: datetime | str) -> str:
    """RFC 3339 UTC with seconds precision and a Z (metav1.Time's wire format)."""
    if isinstance(now, str):
        return now
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> datetime:
    """An RFC 3339 time (a Z or an offset) as an aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def seconds_between(start: str, end: str) -> float:
    """Seconds from one RFC 3339 time to another."""
    return (parse_time(end) - parse_time(start)).total_seconds()


def _status_str(status: bool | str) -> str:
    if isinstance(status, bool):
        return TRUE if status else FALSE
    if status not in (TRUE, FALSE, UNKNOWN):
        raise ValueError(f"condition status must be True, False or Unknown, got {status!r}")
    return status


def get_condition(conditions: Iterable[dict] | None, type_: str) -> dict | None:
    """The condition of this type, or None."""
    for c in conditions or ():
        if c.get("type") == type_:
            return c
    return None


def is_true(conditions: Iterable[dict] | None, type_: str) -> bool:
    """True when the condition exists with status True."""
    c = get_condition(conditions, type_)
    return c is not None and c.get("status") == TRUE


def set_condition(conditions: Iterable[dict] | None, type_: str, status: bool | str, reason: str, message: str,
                  generation: int, now: datetime | str) -> tuple[list[dict], bool]:
    """Set one condition; return (new list, changed). See the module docstring for the rules."""
    if not REASON_PATTERN.match(reason) or len(reason) > MAX_REASON:
        raise ValueError(f"condition reason {reason!r} must be CamelCase ({REASON_PATTERN.pattern})")
    status = _status_str(status)
    message = (message or "")[:MAX_MESSAGE]
    current = [dict(c) for c in conditions or ()]
    old = get_condition(current, type_)
    new = {"type": type_, "status": status, "reason": reason, "message": message,
           "observedGeneration": int(generation)}
    if old is not None:
        same = all(old.get(k) == new[k] for k in ("status", "reason", "message", "observedGeneration"))
        if same:
            return current, False
        new["lastTransitionTime"] = old.get("lastTransitionTime") if old.get("status") == status \
            and old.get("lastTransitionTime") else timestamp(now)
        return [new if c.get("type") == type_ else c for c in current], True
    new["lastTransitionTime"] = timestamp(now)
    return current + [new], True


def remove_condition(conditions: Iterable[dict] | None, type_: str) -> tuple[list[dict], bool]:
    """Drop a condition; return (new list, changed)."""
    current = [dict(c) for c in conditions or ()]
    kept = [c for c in current if c.get("type") != type_]
    return kept, len(kept) != len(current)


def phase(conditions: Iterable[dict] | None) -> str:
    """One-word summary from the conditions, most urgent first.

    Failed: Stalled=True (needs a spec change). Degraded: Degraded=True (for instance rolled back, or serving
    with too few replicas). Ready: Ready=True. Optimizing: an optimization is pending or its Job runs.
    Deploying: Reconciling=True otherwise. Pending: nothing known yet.
    """
    conditions = list(conditions or ())
    if is_true(conditions, STALLED):
        return PHASE_FAILED
    if is_true(conditions, DEGRADED):
        return PHASE_DEGRADED
    if is_true(conditions, READY):
        return PHASE_READY
    optimized = get_condition(conditions, OPTIMIZED)
    if optimized is not None and optimized.get("status") != TRUE \
            and optimized.get("reason") in (Reason.OPTIMIZATION_PENDING, Reason.JOB_RUNNING):
        return PHASE_OPTIMIZING
    if is_true(conditions, RECONCILING):
        return PHASE_DEPLOYING
    return PHASE_PENDING
