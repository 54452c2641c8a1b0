"""status: metav1.Condition-shaped conditions changed only when their content changes; phase from conditions."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from modeldeploy.api import status as st

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
T1 = T0 + timedelta(minutes=5)


def test_new_condition_has_metav1_shape():
    conds, changed = st.set_condition([], st.READY, True, st.Reason.REPLICAS_READY, "2/2 ready", 4, T0)
    assert changed
    assert conds == [{"type": "Ready", "status": "True", "reason": "ReplicasReady", "message": "2/2 ready",
                      "observedGeneration": 4, "lastTransitionTime": "2026-01-02T03:04:05Z"}]


def test_same_content_is_not_a_change_and_keeps_the_time():
    conds, _ = st.set_condition([], st.READY, True, "ReplicasReady", "ok", 4, T0)
    again, changed = st.set_condition(conds, st.READY, "True", "ReplicasReady", "ok", 4, T1)
    assert not changed
    assert again == conds


@pytest.mark.parametrize("field, value", [("reason", "Other"), ("message", "other"), ("generation", 5)])
def test_content_change_without_flip_keeps_transition_time(field, value):
    args = {"reason": "ReplicasReady", "message": "ok", "generation": 4}
    conds, _ = st.set_condition([], st.READY, True, args["reason"], args["message"], args["generation"], T0)
    args[field] = value
    new, changed = st.set_condition(conds, st.READY, True, args["reason"], args["message"], args["generation"], T1)
    assert changed
    assert new[0]["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert new[0]["observedGeneration"] == args["generation"]


def test_status_flip_moves_transition_time():
    conds, _ = st.set_condition([], st.READY, True, "ReplicasReady", "ok", 4, T0)
    new, changed = st.set_condition(conds, st.READY, False, "ReplicasNotReady", "0/2", 4, T1)
    assert changed
    assert new[0]["status"] == "False"
    assert new[0]["lastTransitionTime"] == "2026-01-02T03:09:05Z"


def test_input_is_not_mutated_and_order_is_kept():
    conds, _ = st.set_condition([], st.READY, False, "ReplicasNotReady", "", 1, T0)
    conds, _ = st.set_condition(conds, st.STALLED, False, "AsExpected", "", 1, T0)
    snapshot = [dict(c) for c in conds]
    new, _ = st.set_condition(conds, st.READY, True, "ReplicasReady", "", 1, T1)
    assert conds == snapshot
    assert [c["type"] for c in new] == ["Ready", "Stalled"]


def test_unknown_status_and_string_time():
    conds, _ = st.set_condition(None, st.AVAILABLE, "Unknown", "EndpointUnreachable", "x", 1, "2026-01-01T00:00:00Z")
    assert conds[0]["status"] == "Unknown" and conds[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"


@pytest.mark.parametrize("status, reason", [("Yes", "Fine"), (True, "not camel"), (True, ""), (True, "9Lives")])
def test_invalid_status_or_reason_is_refused(status, reason):
    with pytest.raises(ValueError):
        st.set_condition([], st.READY, status, reason, "", 1, T0)


def test_naive_datetime_is_taken_as_utc():
    assert st.timestamp(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"
    assert st.timestamp(datetime(2026, 1, 2, 4, 4, 5, tzinfo=timezone(timedelta(hours=1)))) == "2026-01-02T03:04:05Z"


def test_rfc3339_times_read_back():
    assert st.parse_time("2026-01-02T03:04:05Z") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert st.timestamp(st.parse_time("2026-01-02T04:04:05+01:00")) == "2026-01-02T03:04:05Z"
    assert st.seconds_between("2026-01-02T03:04:05Z", "2026-01-02T03:06:35Z") == 150.0


def test_get_is_true_remove():
    conds, _ = st.set_condition([], st.DEGRADED, True, "RolledBack", "", 1, T0)
    assert st.get_condition(conds, st.DEGRADED)["reason"] == "RolledBack"
    assert st.get_condition(conds, st.READY) is None
    assert st.is_true(conds, st.DEGRADED) and not st.is_true(conds, st.READY)
    kept, changed = st.remove_condition(conds, st.DEGRADED)
    assert kept == [] and changed
    assert st.remove_condition(kept, st.DEGRADED) == ([], False)


def test_every_reason_matches_the_metav1_pattern():
    reasons = [v for k, v in vars(st.Reason).items() if k.isupper()]
    assert len(reasons) == len(set(reasons))
    assert all(st.REASON_PATTERN.match(r) for r in reasons)


def _conds(*items):
    out = []
    for type_, status, reason in items:
        out, _ = st.set_condition(out, type_, status, reason, "", 1, T0)
    return out


@pytest.mark.parametrize("conds, phase", [
    ([], "Pending"),
    (_conds((st.RECONCILING, True, "RolloutInProgress")), "Deploying"),
    (_conds((st.OPTIMIZED, False, "JobRunning"), (st.RECONCILING, True, "JobRunning")), "Optimizing"),
    (_conds((st.OPTIMIZED, False, "OptimizationPending")), "Optimizing"),
    (_conds((st.READY, True, "ReplicasReady"), (st.OPTIMIZED, True, "JobSucceeded")), "Ready"),
    (_conds((st.READY, True, "ReplicasReady"), (st.DEGRADED, True, "RolledBack")), "Degraded"),
    (_conds((st.READY, True, "ReplicasReady"), (st.STALLED, True, "AccuracyGateFailed")), "Failed"),
    (_conds((st.STALLED, False, "AsExpected"), (st.READY, False, "ReplicasNotReady")), "Pending"),
])
def test_phase(conds, phase):
    assert st.phase(conds) == phase
    assert phase in st.PHASES
