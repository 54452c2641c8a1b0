"""The kstatus checker (tests/kstatus.py): kstatus computation and the honesty rules, on built status objects."""
from __future__ import annotations

import copy
import json

import pytest

from modeldeploy.api import status as st
from tests import kstatus
from tests.kstatus import CURRENT, FAILED, IN_PROGRESS, TERMINATING

NOW = "2025-01-01T00:00:00Z"


def md(generation=1, observed=1, conditions=(), phase=None, **meta):
    """A ModelDeployment with conditions built by the API's own helper: (type, status, reason, message)."""
    conds: list = []
    for type_, status, reason, message in conditions:
        conds, _ = st.set_condition(conds, type_, status, reason, message, observed or 0, NOW)
    obj = {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
           "metadata": {"name": "digits", "namespace": "ml", "generation": generation, **meta},
           "status": {"conditions": conds}}
    if observed is not None:
        obj["status"]["observedGeneration"] = observed
    obj["status"]["phase"] = phase if phase is not None else st.phase(conds)
    return obj


READY = ("Ready", True, "ReplicasReady", "2/2 replicas ready, version 3 available")
NOT_READY = ("Ready", False, "RolloutInProgress", "0/2 replicas of version 3 ready")
RECONCILING = ("Reconciling", True, "RolloutInProgress", "rolling out version 3")
NOT_RECONCILING = ("Reconciling", False, "Reconciled", "")
STALLED = ("Stalled", True, "AccuracyGateFailed", "accuracy drop 0.05 exceeds maxAccuracyDrop 0.01")
NOT_STALLED = ("Stalled", False, "AsExpected", "")
DEGRADED = ("Degraded", True, "RolledBack", "version 3 crash-looped; rolled back to version 2")
NOT_DEGRADED = ("Degraded", False, "AsExpected", "")

HEALTHY = md(conditions=[READY, NOT_RECONCILING, NOT_STALLED, NOT_DEGRADED])
ROLLING = md(conditions=[NOT_READY, RECONCILING, NOT_STALLED])
GATE_FAILED = md(conditions=[NOT_READY, NOT_RECONCILING, STALLED])
ROLLED_BACK = md(conditions=[READY, NOT_RECONCILING, STALLED, DEGRADED])


@pytest.mark.parametrize("obj, expected", [
    (HEALTHY, CURRENT),
    (ROLLING, IN_PROGRESS),
    (GATE_FAILED, FAILED),
    (ROLLED_BACK, FAILED),
    (md(generation=2, observed=1, conditions=[READY]), IN_PROGRESS),          # spec change not yet seen
    (md(generation=2, observed=1, conditions=[STALLED]), IN_PROGRESS),        # generation beats Stalled
    (md(observed=None, conditions=[]), CURRENT),          # no observedGeneration: kstatus cannot tell
    (md(conditions=[NOT_READY]), CURRENT),                # Ready=False alone: the generic rules ignore it
    (md(conditions=[READY], deletionTimestamp=NOW), TERMINATING),
], ids=["healthy", "rolling", "gate-failed", "rolled-back", "stale-generation", "stale-beats-stalled",
        "no-status", "ready-false-only", "terminating"])
def test_kstatus_status(obj, expected):
    assert kstatus.kstatus_status(obj)[0] == expected


def test_first_abnormal_condition_in_order_decides():
    # kstatus walks the conditions in order; Stalled listed first wins over Reconciling.
    obj = md(conditions=[STALLED, RECONCILING])
    assert kstatus.kstatus_status(obj) == (FAILED, STALLED[3])
    obj = md(conditions=[RECONCILING, STALLED])
    assert kstatus.kstatus_status(obj) == (IN_PROGRESS, RECONCILING[3])


def test_generation_message_names_both_generations():
    status, message = kstatus.kstatus_status(md(generation=5, observed=4, conditions=[READY]))
    assert status == IN_PROGRESS and "generation is 5" in message and "observed generation is 4" in message


def test_ready_fallback_reads_ready_false_as_in_progress():
    assert kstatus.kstatus_status(md(conditions=[NOT_READY]), ready_fallback=True)[0] == IN_PROGRESS
    assert kstatus.kstatus_status(HEALTHY, ready_fallback=True)[0] == CURRENT


@pytest.mark.parametrize("obj", [HEALTHY, ROLLING, GATE_FAILED, ROLLED_BACK,
                                 md(generation=3, observed=2, conditions=[READY, NOT_RECONCILING]),
                                 md(observed=None, conditions=[])],
                         ids=["healthy", "rolling", "gate-failed", "rolled-back", "stale", "fresh"])
def test_honest_statuses_pass(obj):
    kstatus.assert_kstatus(obj)


def _mutate(obj, fn):
    out = copy.deepcopy(obj)
    fn(out)
    return out


def _cond(obj, type_):
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


@pytest.mark.parametrize("obj, problem", [
    (md(conditions=[NOT_READY, NOT_RECONCILING, NOT_STALLED]), "kstatus says Current but Ready is False"),
    (md(conditions=[NOT_READY, RECONCILING, STALLED]), "Reconciling and Stalled are both True"),
    (md(conditions=[READY, STALLED]), "without Degraded=True"),
    (md(conditions=[NOT_RECONCILING]), "no Ready condition"),
    (md(conditions=[READY, ("Stalled", True, "JobFailed", "")]), "Stalled=True has no message"),
    (md(conditions=[("Ready", False, "ReplicasNotReady", ""), RECONCILING]), "Ready=False has no message"),
    (md(generation=1, observed=2, conditions=[READY]), "ahead of metadata.generation"),
    (md(generation=2, observed=1, conditions=[READY]), "!= metadata.generation"),      # settled only
    (_mutate(HEALTHY, lambda o: o["status"].pop("observedGeneration")), "observedGeneration is missing"),
    (_mutate(HEALTHY, lambda o: _cond(o, "Ready").update(status="true")), "is not True, False or Unknown"),
    (_mutate(HEALTHY, lambda o: _cond(o, "Ready").update(reason="replicas ready")), "must be CamelCase"),
    (_mutate(HEALTHY, lambda o: _cond(o, "Ready").pop("lastTransitionTime")), "missing lastTransitionTime"),
    (_mutate(HEALTHY, lambda o: _cond(o, "Ready").update(lastTransitionTime="yesterday")), "not RFC 3339"),
    (_mutate(HEALTHY, lambda o: _cond(o, "Ready").pop("observedGeneration")), "missing observedGeneration"),
    (_mutate(md(generation=2, observed=2, conditions=[READY]),
             lambda o: _cond(o, "Ready").update(observedGeneration=1)), "!= status.observedGeneration 2"),
    (_mutate(HEALTHY, lambda o: o["status"]["conditions"].append(dict(_cond(o, "Ready")))), "appears twice"),
    (_mutate(HEALTHY, lambda o: o["status"].update(phase="Deploying")), "does not match the conditions"),
    (_mutate(HEALTHY, lambda o: o["status"].update(conditions={"Ready": "True"})), "not a list"),
], ids=["current-not-ready", "reconciling-and-stalled", "ready-stalled-not-degraded", "no-ready",
        "stalled-silent", "not-ready-silent", "observed-ahead", "not-settled", "no-observed-generation",
        "bad-status", "bad-reason", "no-transition-time", "bad-transition-time", "no-condition-generation",
        "stale-summary-condition", "duplicate", "phase-lies", "conditions-not-list"])
def test_dishonest_statuses_fail(obj, problem):
    problems = kstatus.check_kstatus(obj, settled=True)
    assert any(problem in p for p in problems), problems
    with pytest.raises(AssertionError, match="breaks kstatus"):
        kstatus.assert_kstatus(obj, settled=True)


def test_settled_is_only_required_when_asked():
    stale = md(generation=2, observed=1, conditions=[READY, NOT_RECONCILING])
    assert kstatus.check_kstatus(stale) == []
    assert kstatus.check_kstatus(stale, settled=True) != []


def test_record_and_load_samples(tmp_path, monkeypatch):
    monkeypatch.setattr(kstatus, "SAMPLES", tmp_path / "samples.jsonl")
    kstatus.record_status(HEALTHY, context="unit")
    kstatus.record_status(ROLLING)
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["session"] == kstatus.SESSION
    with open(tmp_path / "samples.jsonl", "a") as f:      # another session's sample is not ours
        f.write(json.dumps({"session": "other", "object": HEALTHY}) + "\n")
    samples = kstatus.load_samples()
    assert [s["context"] for s in samples] == ["unit", ""]
    assert samples[0]["object"]["status"] == HEALTHY["status"]
    assert samples[0]["object"]["metadata"]["generation"] == 1
    assert len(kstatus.load_samples(session=None)) == 3


def test_record_compacts_a_full_file(tmp_path, monkeypatch):
    path = tmp_path / "samples.jsonl"
    monkeypatch.setattr(kstatus, "SAMPLES", path)
    monkeypatch.setattr(kstatus, "SAMPLES_MAX_BYTES", 100)
    old = {"session": "old", "time": 0, "context": "", "object": HEALTHY}
    recent = {"session": "recent", "time": __import__("time").time(), "context": "", "object": HEALTHY}
    path.write_text(json.dumps(old) + "\n" + json.dumps(recent) + "\n")
    for _ in range(3):
        kstatus.record_status(HEALTHY)
    assert len(kstatus.load_samples()) == 3             # every sample of this session survives compaction
    sessions = [s["session"] for s in kstatus.load_samples(session=None)]
    assert "old" not in sessions and "recent" in sessions
