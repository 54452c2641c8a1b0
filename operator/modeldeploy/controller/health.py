"""Health of the serving pods and of TF Serving's model status, as pure functions of what the API returned.

`pod_findings(pods)` turns each serving pod into at most one `Finding` (the most specific problem: init
container failed, image cannot be pulled, OOMKilled, CrashLoopBackOff, Unschedulable with the scheduler's own
message, not ready). `summarize(...)` folds the findings and the replica counts into a `Health`: the reason and
message the Available, Ready and Degraded conditions carry, e.g.
"0/2 replicas ready: pod digits-7f9c Unschedulable: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu".
`model_status(payload)` reads TF Serving's GET /v1/models/<name> answer (state and TF Serving's error message);
`probe_model(url)` fetches it with a short timeout and no redirects, and anything it cannot reach is None
(unknown), never a failure.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

from modeldeploy.api.names import LABEL_VERSION
from modeldeploy.api.status import Reason

# Reasons that mean a pod's containers keep failing: what counts as a failed check of a new version.
FAILING = (Reason.CRASH_LOOP_BACK_OFF, Reason.OOM_KILLED, Reason.IMAGE_PULL_BACK_OFF, Reason.INIT_CONTAINER_FAILED)
# Most specific first, when several pods have different problems.
SEVERITY = (Reason.INIT_CONTAINER_FAILED, Reason.IMAGE_PULL_BACK_OFF, Reason.OOM_KILLED,
            Reason.CRASH_LOOP_BACK_OFF, Reason.UNSCHEDULABLE, Reason.REPLICAS_NOT_READY)
IMAGE_PULL_WAITING = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull")
MAX_PODS_IN_MESSAGE = 3


@dataclass(frozen=True)
class Finding:
    """One pod's problem."""
    pod: str
    reason: str            # a status.Reason constant
    message: str
    version: str | None    # the pod's modeldeploy.io/version label
    restarts: int = 0

    @property
    def failing(self) -> bool:
        """True for crash loops and the like (not for pods that are merely pending or not ready yet)."""
        return self.reason in FAILING


@dataclass(frozen=True)
class Health:
    """What the monitor concluded from one look at the serving pods."""
    ready: int
    desired: int
    minimum: int                       # ready replicas needed for Available/Ready
    findings: tuple = ()
    restarts: int = 0
    model_state: str | None = None     # TF Serving's state of the served version, None when unreachable
    reason: str = Reason.REPLICAS_READY
    message: str = ""

    @property
    def available(self) -> bool:
        return self.ready >= self.minimum and (self.model_state in (None, "AVAILABLE"))

    @property
    def model_failed(self) -> bool:
        """TF Serving answers but reports the served version in another state than AVAILABLE (END, an error)."""
        return self.model_state not in (None, "AVAILABLE")

    def failing(self, version: int | None = None) -> list[Finding]:
        """Findings of failing pods, of one version when given."""
        return [f for f in self.findings if f.failing and (version is None or f.version == str(version))]


def _waiting(status: dict) -> tuple[str, str]:
    w = (status.get("state") or {}).get("waiting") or {}
    return w.get("reason") or "", w.get("message") or ""


def _last_terminated(status: dict) -> dict:
    return ((status.get("lastState") or {}).get("terminated")) or {}


def _condition(pod: dict, type_: str) -> dict:
    for c in (pod.get("status") or {}).get("conditions") or ():
        if c.get("type") == type_:
            return c
    return {}


def pod_finding(pod: dict) -> Finding | None:
    """The most specific problem of one serving pod, or None when it is ready (or going away)."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
        return None
    name = meta.get("name", "?")
    version = (meta.get("labels") or {}).get(LABEL_VERSION)
    restarts = sum(int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or ())

    def found(reason: str, message: str) -> Finding:
        return Finding(pod=name, reason=reason, message=message, version=version, restarts=restarts)

    for c in status.get("initContainerStatuses") or ():
        reason, message = _waiting(c)
        terminated = (c.get("state") or {}).get("terminated") or {}
        last = _last_terminated(c)
        if reason in IMAGE_PULL_WAITING:
            return found(Reason.IMAGE_PULL_BACK_OFF, f"init container {c.get('name')}: {reason}: {message}".strip())
        if (terminated and terminated.get("exitCode", 0) != 0) or reason == "CrashLoopBackOff":
            detail = terminated or last
            return found(Reason.INIT_CONTAINER_FAILED,
                         f"init container {c.get('name')} exited {detail.get('exitCode', '?')}"
                         f" ({detail.get('reason') or reason or 'Error'})"
                         + (f": {detail['message'].strip()[:300]}" if detail.get("message") else ""))
    for c in status.get("containerStatuses") or ():
        reason, message = _waiting(c)
        last = _last_terminated(c)
        current = (c.get("state") or {}).get("terminated") or {}
        if reason in IMAGE_PULL_WAITING:
            return found(Reason.IMAGE_PULL_BACK_OFF, f"{reason}: {message}".strip(": "))
        if last.get("reason") == "OOMKilled" or current.get("reason") == "OOMKilled":
            return found(Reason.OOM_KILLED, f"container {c.get('name')} was OOMKilled (exit code 137, "
                                            f"{c.get('restartCount', 0)} restarts): raise its memory limit")
        if reason == "CrashLoopBackOff":
            return found(Reason.CRASH_LOOP_BACK_OFF,
                         f"container {c.get('name')} is in CrashLoopBackOff ({c.get('restartCount', 0)} restarts, "
                         f"last exit code {last.get('exitCode', '?')} {last.get('reason', '')})".replace(" )", ")"))
    scheduled = _condition(pod, "PodScheduled")
    if scheduled.get("status") == "False":
        return found(Reason.UNSCHEDULABLE, scheduled.get("message") or scheduled.get("reason") or "not scheduled")
    if _condition(pod, "Ready").get("status") != "True":
        return found(Reason.REPLICAS_NOT_READY, f"not ready ({status.get('phase') or 'Pending'})")
    return None


def pod_findings(pods: list[dict]) -> list[Finding]:
    """Findings of every problem pod, most specific first (then by name, for stable messages)."""
    findings = [f for f in (pod_finding(p) for p in pods) if f is not None]
    return sorted(findings, key=lambda f: (SEVERITY.index(f.reason), f.pod))


def total_restarts(pods: list[dict]) -> int:
    """Container restarts summed over the pods."""
    return sum(int(c.get("restartCount") or 0) for p in pods
               for c in (p.get("status") or {}).get("containerStatuses") or ())


def summarize(pods: list[dict], ready: int, desired: int, minimum: int, model_state: str | None = None,
              model_message: str = "") -> Health:
    """Fold pods and replica counts into one `Health` with a reason and a message for the conditions."""
    findings = tuple(pod_findings(pods))
    head = f"{ready}/{desired} replicas ready"
    if findings:
        worst = findings[0].reason
        shown = "; ".join(f"pod {f.pod} {f.reason}: {f.message}" for f in findings[:MAX_PODS_IN_MESSAGE])
        more = f" (and {len(findings) - MAX_PODS_IN_MESSAGE} more)" if len(findings) > MAX_PODS_IN_MESSAGE else ""
        reason, message = worst, f"{head}: {shown}{more}"
    elif ready < minimum:
        reason, message = Reason.REPLICAS_NOT_READY, f"{head} (at least {minimum} needed)"
    elif model_state not in (None, "AVAILABLE"):
        reason, message = Reason.MODEL_NOT_AVAILABLE, f"{head}; TF Serving reports the model {model_state}" + (
            f": {model_message}" if model_message else "")
    else:
        reason = Reason.MODEL_AVAILABLE if model_state == "AVAILABLE" else Reason.REPLICAS_READY
        message = head + ("; TF Serving reports the model AVAILABLE" if model_state == "AVAILABLE" else "")
    return Health(ready=ready, desired=desired, minimum=minimum, findings=findings,
                  restarts=total_restarts(pods), model_state=model_state, reason=reason, message=message)


def model_status(payload: dict, version: int | None = None) -> tuple[str | None, str]:
    """(state, error message) of `version` (or the newest listed) in a GET /v1/models/<name> answer.

    TF Serving answers {"model_version_status": [{"version": "3", "state": "AVAILABLE",
    "status": {"error_code": "OK", "error_message": ""}}]}; the message is TF Serving's own words for a version
    that failed (state END with an error code), else "".
    """
    statuses = payload.get("model_version_status") if isinstance(payload, dict) else None
    if not statuses:
        return None, ""
    chosen = None
    for s in statuses:
        if version is None or str(s.get("version")) == str(version):
            if chosen is None or int(s.get("version") or 0) > int(chosen.get("version") or 0):
                chosen = s
    if not chosen:
        return None, ""
    status = chosen.get("status") or {}
    code = status.get("error_code") or "OK"
    message = "" if code == "OK" else f"{code}: {status.get('error_message') or ''}".strip(": ")
    return chosen.get("state"), message[:300]


def model_state(payload: dict, version: int | None = None) -> str | None:
    """State of `version` (or the newest listed) in a GET /v1/models/<name> answer, e.g. AVAILABLE."""
    return model_status(payload, version)[0]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A serving pod's answer is read where it is: a redirect elsewhere is not followed."""

    def redirect_request(self, *args, **kwargs):
        return None


NO_REDIRECTS = urllib.request.build_opener(_NoRedirects)     # also the SLO scrapes' (controller/scrape.py)


def probe_model(url: str, version: int | None = None, timeout: float = 1.0) -> tuple[str | None, str]:
    """TF Serving's (state, error message) for the version at `url`; (None, "") when unreachable or
    unreadable (unknown, not failed)."""
    try:
        with NO_REDIRECTS.open(url, timeout=timeout) as resp:   # noqa: S310 - http to our own pods
            return model_status(json.loads(resp.read(65536)), version)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return "NOT_FOUND", ""                # the server answers but does not have the model
        return None, ""
    except (OSError, ValueError):
        return None, ""
