"""The SLO in decide() and status: Degraded=True SLOViolated with the figures and the bound while Ready stays True,
Events on the verdict's transitions only, no writes for immaterial moves, kstatus/Argo CD agreement, and the
operator's metrics."""
from __future__ import annotations

import pytest

from modeldeploy.controller import decide as dc
from modeldeploy.controller import metrics, slo
from modeldeploy.controller.observe import deployment_view
from tests.argo_health import agreement_problems, lua_health
from tests.kstatus import CURRENT, check_kstatus, kstatus_status
from tests.unit.test_reconcile_decide import cond, deployment, md, observe, pod

SLO = {"maxP99LatencyMs": 250, "maxErrorRatio": 0.05, "minRequestsPerSecond": 1, "windowSeconds": 60}
T0, T1, T2 = "2025-01-01T00:00:00Z", "2025-01-01T00:00:30Z", "2025-01-01T00:01:30Z"


def fig(p99=100.0, err=0.0, rps=10.0, version=1) -> slo.Figures:
    return slo.Figures(requests_per_second=rps, error_ratio=err, p50_ms=20.0, p99_ms=p99, window_seconds=60.0,
                       pods=1, requests=rps * 60, version=version)


def serving_status(spec):
    """The status of a version serving on its one ready replica (no figures yet)."""
    first = dc.decide(spec, observe())
    return dc.decide(spec, observe(first.status, deployment=deployment_view(deployment(spec)),
                                   pods=(pod("digits-a", 1),))).status


def step(spec, status, figures, now, **kw):
    """decide() with these figures, its status checked against kstatus, and idempotent: the same pass again
    (the hysteresis depends on the clock, so at the same time) changes nothing and posts nothing."""
    obs = observe(status, deployment=deployment_view(deployment(spec)), pods=kw.pop("pods", (pod("digits-a", 1),)),
                  serving_metrics=figures, now=now, interval_check=True, **kw)
    plan = dc.decide(spec, obs)
    assert check_kstatus(body(plan.status), settled=True) == []
    for figures_again in (figures, None):          # None: a reconcile woken by a child event measures nothing
        again = dc.decide(spec, dc.Observed(**{**obs.__dict__, "status": plan.status, "interval_check": False,
                                               "serving_metrics": figures_again}))
        assert again.status == plan.status and again.events == []
    return plan


def body(status):
    return {"kind": "ModelDeployment", "metadata": {"name": "digits", "namespace": "ml", "generation": 1},
            "status": status}


def test_violation_is_degraded_not_unready_and_clears_no_faster_than_the_window():
    spec = md(monitoring={"slo": SLO})
    met = step(spec, serving_status(spec), fig(), T0)
    assert met.status["serving"]["metrics"]["slo"] == "Met" and met.events == []
    assert cond(met, "Degraded")[0] == "False"

    bad = step(spec, met.status, fig(p99=412.3, err=0.2), T2)
    status, reason, message = cond(bad, "Degraded")
    assert (status, reason) == ("True", "SLOViolated")
    assert message.startswith("SLO violated on version 1: p99 412.3 ms > 250 ms; error ratio 0.2000 > 0.05 "
                              "(10.00 requests/s, error ratio 0.2000, p50 20.0 ms, p99 412.3 ms over 60 s on 1 "
                              "pod(s); SLO p99 <= 250 ms, error ratio <= 0.05)")
    assert cond(bad, "Ready")[0] == "True" and cond(bad, "Stalled")[0] == "False"
    assert bad.status["phase"] == "Degraded"
    assert bad.events == [("Warning", "SLOViolated", message)]
    # kstatus: Current (Degraded is not one of its conditions); Argo CD and the operator's health: Degraded.
    assert kstatus_status(body(bad.status))[0] == CURRENT
    assert lua_health(body(bad.status))[0] == "Degraded" == metrics.health_state(body(bad.status))[0]
    assert agreement_problems(body(bad.status), "Degraded") == []

    # The fault stops: the figures are fine again, but the verdict stands until a window has passed.
    held = step(spec, bad.status, fig(), "2025-01-01T00:02:00Z")
    assert cond(held, "Degraded")[:2] == ("True", "SLOViolated") and held.events == []
    cleared = step(spec, held.status, fig(), "2025-01-01T00:02:30Z")
    assert cond(cleared, "Degraded")[:2] == ("False", "AsExpected")
    assert cleared.status["phase"] == "Ready"
    assert [e[:2] for e in cleared.events] == [("Normal", "SLOMet")]


def test_immaterial_moves_and_unmeasured_passes_write_nothing():
    spec = md(monitoring={"slo": SLO})
    met = step(spec, serving_status(spec), fig(), T0)
    for figures in (fig(p99=105), fig(rps=10.5), None):
        again = step(spec, met.status, figures, T1)
        assert again.status == met.status and again.events == []
    moved = step(spec, met.status, fig(p99=150), T1)
    assert moved.status["serving"]["metrics"]["p99Ms"] == 150.0


def test_no_verdict_below_the_minimum_rate_is_not_degraded():
    spec = md(monitoring={"slo": SLO})
    quiet = step(spec, serving_status(spec), fig(p99=5000, err=1.0, rps=0.5), T0)
    assert quiet.status["serving"]["metrics"]["slo"] == "NoVerdict"
    assert cond(quiet, "Degraded")[0] == "False" and quiet.events == []


def test_failing_pods_outrank_the_slo_and_figures_of_another_version_are_ignored():
    spec = md(monitoring={"slo": SLO})
    crashing = step(spec, serving_status(spec), fig(p99=900), T0,
                    pods=(pod("digits-a", 1), pod("digits-b", 1, ready=False, waiting="CrashLoopBackOff",
                                                    restarts=4)))
    assert cond(crashing, "Degraded")[:2] == ("True", "CrashLoopBackOff")
    assert crashing.status["serving"]["metrics"]["slo"] == "Violated"       # still recorded
    other = step(spec, serving_status(spec), fig(p99=900, version=7), T0)
    assert "metrics" not in other.status["serving"] and cond(other, "Degraded")[0] == "False"


def test_without_an_slo_there_is_no_metrics_block():
    spec = md()
    plan = step(spec, serving_status(spec), fig(p99=900), T0)
    assert "metrics" not in plan.status["serving"] and cond(plan, "Degraded")[0] == "False"
    # An SLO removed from the spec drops the block written before.
    with_slo = step(md(monitoring={"slo": SLO}), serving_status(spec), fig(), T0)
    assert "metrics" not in step(spec, with_slo.status, fig(), T1).status["serving"]


def test_the_status_schema_keeps_the_metrics_block():
    from modeldeploy.api.crd import status_schema
    from modeldeploy.controller import diff
    spec = md(monitoring={"slo": SLO})
    status = step(spec, serving_status(spec), fig(p99=412.3, err=0.2), T0).status
    assert diff.prune(status, status_schema()) == status


def test_operator_metrics_follow_the_verdict():
    from modeldeploy.controller import reconcile
    spec = md(monitoring={"slo": SLO})
    bad = step(spec, serving_status(spec), fig(p99=900), T0)

    def value(name, **labels):
        return metrics.REGISTRY.get_sample_value(name, {"namespace": "ml", "name": "digits", **labels})

    before = value("modeldeploy_slo_violations_total") or 0
    metrics.observe_model(body(bad.status))
    assert value("modeldeploy_model_slo_violated") == 1
    for type_, reason, _ in bad.events:
        reconcile._observe_event(spec, reason, {}, bad.status)
    assert value("modeldeploy_slo_violations_total") == before + 1
    metrics.observe_model(body(serving_status(spec)))          # no verdict (no block): no series
    assert value("modeldeploy_model_slo_violated") is None
    metrics.set_slo("ml", "digits", "Met")
    assert value("modeldeploy_model_slo_violated") == 0
    metrics.forget_model("ml", "digits")
    assert value("modeldeploy_model_slo_violated") is None


@pytest.mark.parametrize("interval_check, expected", [(True, 1), (False, 0)])
def test_reconcile_scrapes_on_interval_checks_of_objects_with_an_slo(interval_check, expected):
    """The I/O hook: only interval checks measure, only objects with an SLO, only where pods can be reached."""
    from types import SimpleNamespace

    from modeldeploy.controller import gather
    calls, forgotten = [], []
    fake = SimpleNamespace(measure=lambda *a: calls.append(a) or None, forget=forgotten.append)
    ctx = SimpleNamespace(slo=fake, probe_models=True, probe_cidrs=(), status_schema=None)
    target = object()
    gather._serving_metrics(ctx, md(monitoring={"slo": SLO}), "u1", [], target, interval_check)
    assert len(calls) == expected
    gather._serving_metrics(ctx, md(), "u1", [], target, True)
    assert len(calls) == expected and forgotten == ["u1"]          # no SLO: nothing scraped, memory released
    gather._serving_metrics(SimpleNamespace(**{**ctx.__dict__, "probe_models": False}), md(monitoring={"slo": SLO}), "u1",
                            [], target, True)
    assert len(calls) == expected                                  # pods out of reach: never scraped
    from modeldeploy.api.crd import status_schema
    old_crd = status_schema()
    del old_crd["properties"]["serving"]["properties"]["metrics"]
    for schema, more in ((status_schema(), expected), (old_crd, 0)):
        gather._serving_metrics(SimpleNamespace(**{**ctx.__dict__, "status_schema": schema}),
                                md(monitoring={"slo": SLO}), "u1", [], target, interval_check)
        assert len(calls) == expected + more                       # a CRD that prunes the verdict: not judged
        expected += more
