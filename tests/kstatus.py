"""kstatus for tests: what sigs.k8s.io/cli-utils would say about a ModelDeployment, and whether our status is honest.

- `kstatus_status(obj) -> (status, message)`: the generic kstatus computation for a custom resource (no
  type-specific rules exist for ours): deletionTimestamp -> Terminating; an observedGeneration that differs from
  metadata.generation -> InProgress; then, in condition order, the first Reconciling=True -> InProgress or
  Stalled=True -> Failed; otherwise Current. `kstatus_status(obj, ready_fallback=True)` also applies the
  README's Ready rule (Ready=False -> InProgress) that some consumers use.
- `check_kstatus(obj, settled=False) -> list[str]` and `assert_kstatus(obj, settled=False)`: the condition shape
  of metav1.Condition, observedGeneration rules, and that kstatus, Argo CD and humans would all read the same
  thing: Current implies Ready=True (else Flux and `kpt live status` would call a broken model done), Reconciling
  and Stalled are never both True, Ready=True with Stalled=True only with Degraded=True (the rolled-back version
  serves), abnormal conditions and Ready=False say why, and status.phase matches the conditions.
  `settled=True` also requires observedGeneration == generation.
- `record_status(obj, context="")`: append the object (metadata essentials and status) to
  .cluster/status-samples.jsonl, tagged with this pytest process's session id (tests.fixtures.operator.get_md
  records every status a test reads; each is judged there, at the read, by kstatus and the Argo CD health check).
- `load_samples(session=SESSION)`: the recorded samples (of this session by default).
"""
from __future__ import annotations

import fcntl
import json
import os
import pathlib
import re
import time
import uuid
from datetime import datetime

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLES = REPO / ".cluster" / "status-samples.jsonl"
SAMPLES_MAX_BYTES = 20 * 1024 * 1024       # compacted beyond this, so the file never grows without bound
SAMPLES_KEEP_SECONDS = 6 * 3600             # compaction keeps this session's samples and those of recent runs
SESSION = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

IN_PROGRESS, FAILED, CURRENT, TERMINATING = "InProgress", "Failed", "Current", "Terminating"

# metav1.Condition validation (k8s.io/apimachinery/pkg/apis/meta/v1/types.go markers).
TYPE_RE = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                     r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$")
REASON_RE = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
REQUIRED = ("type", "status", "reason", "message", "lastTransitionTime")
ABNORMAL_TRUE = ("Reconciling", "Stalled", "Degraded")


def _conditions(obj: dict) -> list:
    return list(((obj.get("status") or {}).get("conditions")) or [])


def _cond(obj: dict, type_: str) -> dict | None:
    return next((c for c in _conditions(obj) if isinstance(c, dict) and c.get("type") == type_), None)


def _true(obj: dict, type_: str) -> bool:
    c = _cond(obj, type_)
    return c is not None and c.get("status") == "True"


def kstatus_status(obj: dict, ready_fallback: bool = False) -> tuple[str, str]:
    """The status cli-utils' kstatus computes for this object (generic rules for custom resources)."""
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return TERMINATING, "Resource scheduled for deletion"
    generation = meta.get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        return IN_PROGRESS, (f"{obj.get('kind', 'Resource')} generation is {generation}, "
                             f"but latest observed generation is {observed}")
    for c in _conditions(obj):
        if not isinstance(c, dict) or c.get("status") != "True":
            continue
        if c.get("type") == "Reconciling":
            return IN_PROGRESS, c.get("message", "")
        if c.get("type") == "Stalled":
            return FAILED, c.get("message", "")
    if ready_fallback:
        ready = _cond(obj, "Ready")
        if ready is not None and ready.get("status") == "False":
            return IN_PROGRESS, ready.get("message", "")
    return CURRENT, "Resource is current"


def _rfc3339(value) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return "T" in value


def _shape_problems(c, i: int, generation, observed) -> list[str]:
    if not isinstance(c, dict):
        return [f"conditions[{i}] is not an object: {c!r}"]
    where = f"condition {c.get('type', f'#{i}')}"
    out = [f"{where}: missing {k}" for k in REQUIRED if k not in c]
    type_ = c.get("type")
    if not isinstance(type_, str) or not TYPE_RE.match(type_) or len(type_) > 316:
        out.append(f"{where}: type {type_!r} is not a valid condition type")
    if c.get("status") not in ("True", "False", "Unknown"):
        out.append(f"{where}: status {c.get('status')!r} is not True, False or Unknown")
    reason = c.get("reason")
    if not isinstance(reason, str) or not REASON_RE.match(reason) or len(reason) > 1024:
        out.append(f"{where}: reason {reason!r} must be CamelCase ({REASON_RE.pattern}), at most 1024 chars")
    message = c.get("message")
    if "message" in c and (not isinstance(message, str) or len(message) > 32768):
        out.append(f"{where}: message must be a string of at most 32768 characters")
    if "lastTransitionTime" in c and not _rfc3339(c.get("lastTransitionTime")):
        out.append(f"{where}: lastTransitionTime {c.get('lastTransitionTime')!r} is not RFC 3339")
    og = c.get("observedGeneration")
    if og is None:
        out.append(f"{where}: missing observedGeneration")
    elif not isinstance(og, int) or isinstance(og, bool) or og < 0:
        out.append(f"{where}: observedGeneration {og!r} is not a non-negative integer")
    else:
        if isinstance(generation, int) and og > generation:
            out.append(f"{where}: observedGeneration {og} is ahead of metadata.generation {generation}")
        if isinstance(observed, int) and og > observed:
            out.append(f"{where}: observedGeneration {og} is ahead of status.observedGeneration {observed}")
        if isinstance(observed, int) and type_ in ("Ready", "Reconciling", "Stalled") and og != observed:
            # The summary conditions must describe the generation status claims to have observed.
            out.append(f"{where}: observedGeneration {og} != status.observedGeneration {observed}")
    return out


def check_kstatus(obj: dict, settled: bool = False) -> list[str]:
    """Every way this object's status breaks the kstatus rules or our honesty rules (empty list: fine)."""
    problems: list[str] = []
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    conditions = status.get("conditions")
    if conditions is not None and not isinstance(conditions, list):
        return [f"status.conditions is not a list: {conditions!r}"]
    conditions = conditions or []

    if observed is None:
        if conditions:
            problems.append("status.conditions are set but status.observedGeneration is missing")
        if settled:
            problems.append("status.observedGeneration is missing (the operator has not handled the object)")
    elif not isinstance(observed, int) or isinstance(observed, bool):
        problems.append(f"status.observedGeneration {observed!r} is not an integer")
    elif isinstance(generation, int):
        if observed > generation:
            problems.append(f"status.observedGeneration {observed} is ahead of metadata.generation {generation}")
        if settled and observed != generation:
            problems.append(f"status.observedGeneration {observed} != metadata.generation {generation}")

    seen: set = set()
    for i, c in enumerate(conditions):
        problems += _shape_problems(c, i, generation, observed)
        if isinstance(c, dict):
            if c.get("type") in seen:
                problems.append(f"condition {c.get('type')} appears twice")
            seen.add(c.get("type"))
    if meta.get("deletionTimestamp"):
        return problems

    ks, _ = kstatus_status(obj)
    ready = _cond(obj, "Ready")
    if conditions and ready is None:
        problems.append("conditions are set but there is no Ready condition")
    if _true(obj, "Reconciling") and _true(obj, "Stalled"):
        problems.append("Reconciling and Stalled are both True (kstatus would depend on their order)")
    if ks == CURRENT and conditions and not _true(obj, "Ready"):
        problems.append(f"kstatus says Current but Ready is {ready.get('status') if ready else 'missing'}: "
                        "nothing in progress and nothing stalled, yet not ready (set Reconciling or Stalled)")
    if _true(obj, "Ready") and _true(obj, "Stalled") and not _true(obj, "Degraded"):
        problems.append("Ready=True and Stalled=True without Degraded=True (only a rolled-back version may "
                        "serve while stalled)")
    for type_ in ABNORMAL_TRUE:
        c = _cond(obj, type_)
        if c is not None and c.get("status") == "True" and not (c.get("message") or "").strip():
            problems.append(f"{type_}=True has no message (say what is happening or what to change)")
    if ready is not None and ready.get("status") == "False" and not (ready.get("message") or "").strip():
        problems.append("Ready=False has no message (say why)")
    if "phase" in status and conditions:
        from modeldeploy.api import status as api_status
        expected = api_status.phase(conditions)
        if status["phase"] != expected:
            problems.append(f"status.phase {status['phase']!r} does not match the conditions ({expected!r})")
    return problems


def assert_kstatus(obj: dict, settled: bool = False) -> None:
    """Fail with every problem `check_kstatus` finds, and the status that has them."""
    problems = check_kstatus(obj, settled=settled)
    if problems:
        meta = obj.get("metadata") or {}
        raise AssertionError(
            f"{obj.get('kind', 'object')} {meta.get('namespace')}/{meta.get('name')} status breaks kstatus:\n  - "
            + "\n  - ".join(problems)
            + f"\nmetadata.generation={meta.get('generation')} status={json.dumps(obj.get('status'), indent=1)}")


def _essentials(obj: dict) -> dict:
    meta = obj.get("metadata") or {}
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {k: meta[k] for k in ("name", "namespace", "generation", "uid", "deletionTimestamp")
                     if k in meta},
        "spec": obj.get("spec"),
        "status": obj.get("status"),
    }


def record_status(obj: dict, context: str = "") -> None:
    """Append this object's status to .cluster/status-samples.jsonl (tagged with this session)."""
    if hasattr(obj, "to_dict"):          # a kubernetes client model
        obj = obj.to_dict()
    line = json.dumps({"session": SESSION, "time": time.time(), "context": context, "object": _essentials(obj)},
                      default=str, sort_keys=True) + "\n"
    SAMPLES.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        f = open(SAMPLES, "a", encoding="utf-8")
        fcntl.flock(f, fcntl.LOCK_EX)     # other pytest processes may append at the same time
        try:
            # Another process may have compacted (replaced) the file while we waited for the lock.
            if os.path.exists(SAMPLES) and os.stat(SAMPLES).st_ino == os.fstat(f.fileno()).st_ino:
                if f.tell() > SAMPLES_MAX_BYTES:
                    _compact_with(line)
                else:
                    f.write(line)
                return
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()
    raise RuntimeError(f"could not lock {SAMPLES} to record a status sample")


def _compact_with(line: str) -> None:
    """Rewrite the full samples file keeping only recent samples (and this session's), plus `line`."""
    horizon = time.time() - SAMPLES_KEEP_SECONDS
    kept = []
    for old in SAMPLES.read_text(encoding="utf-8").splitlines():
        try:
            sample = json.loads(old)
        except json.JSONDecodeError:
            continue
        if sample.get("session") == SESSION or float(sample.get("time") or 0) >= horizon:
            kept.append(old + "\n")
    tmp = SAMPLES.with_suffix(f".tmp.{os.getpid()}")
    tmp.write_text("".join(kept) + line, encoding="utf-8")
    os.replace(tmp, SAMPLES)


def load_samples(session: str | None = SESSION) -> list[dict]:
    """Recorded samples (dicts with session, time, context, object); all sessions when session is None."""
    out = []
    if not SAMPLES.exists():
        return out
    for line in SAMPLES.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
        except json.JSONDecodeError:      # a line cut by a crash elsewhere; the rest still counts
            continue
        if session is None or sample.get("session") == session:
            out.append(sample)
    return out
