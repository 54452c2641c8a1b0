"""SLO arithmetic: TF Serving's exposition parsed, counter resets, histogram quantiles by hand, windows, the
verdict's hysteresis, no verdict below the minimum rate, and what counts as a material change."""
from __future__ import annotations

import math

import pytest

from modeldeploy.api.spec import SLOSpec
from modeldeploy.controller import slo, tfmetrics
from modeldeploy.controller.tfmetrics import Counts

INF = math.inf
# TF Serving's request_latency buckets: Exponential(10, 1.8, 33) microseconds, then +Inf.
TF_BOUNDS = [10 * 1.8 ** i for i in range(33)] + [INF]

# The exposition as prometheus_exporter.cc prints it: only # TYPE lines, counters without _total, labels in
# TF's order. Two models; request_latency with the status label of recent releases for m, without for other.
TEXT = """# TYPE :tensorflow:cc:saved_model:load_attempt_count counter
:tensorflow:cc:saved_model:load_attempt_count{model_path="/models/m/1",status="success"} 1
# TYPE :tensorflow:serving:request_count counter
:tensorflow:serving:request_count{model_name="m",status="OK"} 90
:tensorflow:serving:request_count{model_name="m",status="INTERNAL"} 6
:tensorflow:serving:request_count{model_name="m",status="INVALID_ARGUMENT"} 4
:tensorflow:serving:request_count{model_name="other",status="OK"} 1000
# TYPE :tensorflow:serving:request_latency histogram
:tensorflow:serving:request_latency_bucket{model_name="m",API="Predict",entrypoint="REST",status="OK",le="10"} 0
:tensorflow:serving:request_latency_bucket{model_name="m",API="Predict",entrypoint="REST",status="OK",le="18"} 50
:tensorflow:serving:request_latency_bucket{model_name="m",API="Predict",entrypoint="REST",status="OK",le="+Inf"} 90
:tensorflow:serving:request_latency_sum{model_name="m",API="Predict",entrypoint="REST",status="OK"} 1234
:tensorflow:serving:request_latency_count{model_name="m",API="Predict",entrypoint="REST",status="OK"} 90
:tensorflow:serving:request_latency_bucket{model_name="m",API="Predict",entrypoint="GRPC",status="INTERNAL",le="10"} 0
:tensorflow:serving:request_latency_bucket{model_name="m",API="Predict",entrypoint="GRPC",status="INTERNAL",le="18"} 6
:tensorflow:serving:request_latency_bucket{model_name="m",API="Predict",entrypoint="GRPC",status="INTERNAL",le="+Inf"} 10
:tensorflow:serving:request_latency_bucket{model_name="other",API="Predict",entrypoint="REST",le="10"} 1000
:tensorflow:serving:request_latency_bucket{model_name="other",API="Predict",entrypoint="REST",le="+Inf"} 1000
"""


def counts(statuses: dict, buckets: list) -> Counts:
    return Counts(dict(statuses), tuple(buckets))


# ------------------------------------------------------------------------------------------------ parsing

def test_parse_sums_one_models_series_over_its_other_labels():
    c = tfmetrics.parse(TEXT, "m")
    assert c.statuses == {"OK": 90, "INTERNAL": 6, "INVALID_ARGUMENT": 4}
    assert c.buckets == ((10.0, 0.0), (18.0, 56.0), (INF, 100.0))
    assert c.requests == 100 and c.errors == 6          # a client's INVALID_ARGUMENT is not the server's error
    other = tfmetrics.parse(TEXT, "other")              # the stand-in's labels, without status
    assert other.statuses == {"OK": 1000} and other.buckets == ((10.0, 1000.0), (INF, 1000.0))


def test_parse_reads_escaped_label_values_and_skips_garbage():
    text = ('\n:tensorflow:serving:request_count{model_name="m\\"x",status="OK"} 3\n'
            ':tensorflow:serving:request_count{model_name="m",status="OK"} nonsense\n'
            ':tensorflow:serving:request_count{model_name="m",status="OK" 7\n'
            ':tensorflow:serving:request_count{model_name="m",status="OK"} NaN\n'
            ':tensorflow:serving:request_count{model_name="m",status="OK"} 2 1700000000000\n')
    assert tfmetrics.parse(text, 'm"x').statuses == {"OK": 3}
    assert tfmetrics.parse(text, "m").statuses == {"OK": 2}      # the timestamp is not the value
    assert tfmetrics.parse("", "m") == Counts() and Counts().requests == 0


# ------------------------------------------------------------------------------------------------ quantiles

@pytest.mark.parametrize("q, buckets, expected", [
    # rank 5 of 10 in (18, 32.4]: 18 + 14.4 * (5 - 2) / 8
    (0.5, [(10, 0), (18, 2), (32.4, 10), (INF, 10)], 23.4),
    # rank 9.9: 18 + 14.4 * 7.9 / 8
    (0.99, [(10, 0), (18, 2), (32.4, 10), (INF, 10)], 32.22),
    # the first bucket starts at 0: rank 2 of 4 in (0, 10]
    (0.5, [(10, 4), (18, 4), (INF, 4)], 5.0),
    # rank 9 falls in +Inf: the upper bound of the last finite bucket
    (0.9, [(10, 0), (18, 5), (INF, 10)], 18.0),
    # exactly on a bucket's cumulative count: that bucket's upper bound
    (0.5, [(10, 5), (18, 10), (INF, 10)], 10.0),
    (0.0, [(10, 0), (18, 10), (INF, 10)], 10.0),
])
def test_quantile_by_hand(q, buckets, expected):
    assert tfmetrics.quantile(q, tuple(buckets)) == pytest.approx(expected)


def test_quantile_without_observations_or_total():
    assert tfmetrics.quantile(0.5, ()) is None
    assert tfmetrics.quantile(0.5, ((10, 0), (INF, 0))) is None
    assert tfmetrics.quantile(0.5, ((10, 3), (18, 4))) is None           # no +Inf: no total
    assert tfmetrics.quantile(1.5, ((10, 3), (INF, 4))) is None


def test_quantile_on_tf_buckets_of_a_known_sample():
    """100 requests: 60 of 30 ms, 40 of 300 ms (in TF's buckets). p50 interpolates in (20.82, 37.48] ms and p99
    in (218.6, 393.5] ms, within the 1.8x resolution of the truth."""
    def cumulative(values_us):
        return tuple((le, float(sum(v <= le for v in values_us))) for le in TF_BOUNDS)
    sample = [30_000] * 60 + [300_000] * 40
    buckets = cumulative(sample)
    lo50, hi50 = 20_823.0, 37_481.1
    assert tfmetrics.quantile(0.5, buckets) == pytest.approx(lo50 + (hi50 - lo50) * 50 / 60, rel=1e-4)
    lo99, hi99 = 218_591.4, 393_464.6
    assert tfmetrics.quantile(0.99, buckets) == pytest.approx(lo99 + (hi99 - lo99) * 39 / 40, rel=1e-4)


# ------------------------------------------------------------------------------------------------ increases

def test_increase_between_two_scrapes():
    prev = counts({"OK": 10, "INTERNAL": 1}, [(10, 4), (18, 11), (INF, 11)])
    cur = counts({"OK": 15, "INTERNAL": 1, "UNAVAILABLE": 2}, [(10, 5), (18, 16), (INF, 18)])
    d = tfmetrics.increase(prev, cur)
    assert d.statuses == {"OK": 5, "INTERNAL": 0, "UNAVAILABLE": 2}     # a new series starts from zero
    assert d.buckets == ((10, 1), (18, 5), (INF, 7))


def test_first_scrape_is_only_a_baseline():
    assert tfmetrics.increase(None, counts({"OK": 50}, [(INF, 50)])) == Counts()


@pytest.mark.parametrize("cur", [
    counts({"OK": 3}, [(10, 1), (18, 3), (INF, 3)]),                          # the counter went down
    counts({"OK": 12}, [(10, 5), (18, 12), (INF, 12)]),                       # INTERNAL vanished
], ids=["lower", "vanished-series"])
def test_a_restarted_process_counts_everything_since_its_start(cur):
    prev = counts({"OK": 10, "INTERNAL": 1}, [(10, 4), (18, 11), (INF, 11)])
    assert tfmetrics.increase(prev, cur) == cur


def test_a_restart_the_values_hide_is_told_by_the_restart_count():
    prev = counts({"OK": 10}, [(INF, 10)])
    cur = counts({"OK": 12}, [(INF, 12)])          # 12 requests since the restart, more than before it
    assert tfmetrics.increase(prev, cur).requests == 2
    assert tfmetrics.increase(prev, cur, restarted=True).requests == 12


def test_sum_over_pods_with_different_bounds_stays_cumulative():
    a = counts({"OK": 4}, [(10, 1), (20, 4), (INF, 4)])
    b = counts({"OK": 2, "INTERNAL": 1}, [(15, 2), (INF, 3)])
    total = a + b
    assert total.statuses == {"OK": 6, "INTERNAL": 1}
    assert total.buckets == ((10, 1), (15, 3), (20, 6), (INF, 7))


# ------------------------------------------------------------------------------------------------ windows

def hist(ok=0, errors=0, fast=0, slow=0) -> Counts:
    """Cumulative counts of one pod: `fast` requests of 15 us, `slow` ones of 300 ms."""
    return counts({"OK": ok, "INTERNAL": errors} if errors else {"OK": ok},
                  [(le, float(fast * (le >= 15) + slow * (le >= 300_000))) for le in TF_BOUNDS])


def test_window_rates_over_two_pods_and_a_reset():
    w = slo.Window()
    assert w.observe(0.0, {"a": (0, hist(100, 0, 100)), "b": (0, hist(50, 0, 50))}, 60) is None   # baselines
    f = w.observe(30.0, {"a": (0, hist(160, 0, 160)), "b": (0, hist(80, 10, 90))}, 60)
    assert f.requests == 100 and f.requests_per_second == pytest.approx(100 / 30)
    assert f.error_ratio == pytest.approx(0.1) and f.pods == 2 and f.window_seconds == 30
    # b restarted (its counters went down): its 20 requests since the start count, nothing goes negative
    f = w.observe(60.0, {"a": (0, hist(190, 0, 190)), "b": (0, hist(20, 0, 20))}, 60)
    assert f.requests == 150 and f.requests_per_second == pytest.approx(150 / 60)
    # the first step leaves the window
    f = w.observe(90.0, {"a": (0, hist(220, 0, 220)), "b": (0, hist(50, 0, 50))}, 60)
    assert f.requests == 110 and f.window_seconds == 60 and f.error_ratio == 0


def test_window_restart_count_and_failed_scrapes():
    w = slo.Window()
    w.observe(0.0, {"a": (0, hist(10, 0, 10)), "b": (0, hist(10, 0, 10))}, 120)
    # b's scrape failed: it keeps its last sample, so its next increase covers both intervals
    f = w.observe(30.0, {"a": (0, hist(20, 0, 20))}, 120, alive={"a", "b"})
    assert f.requests == 10 and f.pods == 1
    f = w.observe(60.0, {"a": (0, hist(30, 0, 30)), "b": (0, hist(30, 0, 30))}, 120)
    assert f.requests == 40
    # b restarted with more requests than it had: the restart count says so
    f = w.observe(90.0, {"a": (0, hist(30, 0, 30)), "b": (1, hist(45, 0, 45))}, 120)
    assert f.requests == 85
    # every scrape failed: nothing measured (not zero traffic)
    assert w.observe(120.0, {}, 120) is None
    # b is gone: forgotten, and a new pod only sets its baseline; the step from 0 s to 30 s left the window
    f = w.observe(150.0, {"c": (0, hist(500, 0, 500))}, 120, alive={"c"})
    assert set(w.last) == {"c"} and f.requests == 30 + 45 and f.window_seconds == 120


def test_window_quantiles_in_milliseconds():
    w = slo.Window()
    w.observe(0.0, {"a": (0, hist())}, 60)
    f = w.observe(30.0, {"a": (0, hist(100, 0, 98, 2))}, 60)
    assert f.p50_ms == pytest.approx(0.010 + 0.008 * 50 / 98)          # (10, 18] us
    assert f.p99_ms == pytest.approx(218.5914 + (393.4646 - 218.5914) * 0.5, rel=1e-4)
    idle = w.observe(60.0, {"a": (0, hist(100, 0, 98, 2))}, 20)
    assert idle.requests == 0 and idle.p50_ms is None and idle.p99_ms is None and idle.error_ratio == 0


# ------------------------------------------------------------------------------------------------ verdicts

SLO = SLOSpec(max_p99_latency_ms=250, max_error_ratio=0.05, min_requests_per_second=1.0, window_seconds=60)


def fig(rps=10.0, err=0.0, p50=20.0, p99=100.0, window=60.0, pods=2, version=3) -> slo.Figures:
    return slo.Figures(requests_per_second=rps, error_ratio=err, p50_ms=p50, p99_ms=p99, window_seconds=window,
                       pods=pods, requests=rps * window, version=version)


@pytest.mark.parametrize("figures, verdict", [
    (fig(), slo.MET),
    (fig(p99=251), slo.VIOLATED),
    (fig(err=0.06), slo.VIOLATED),
    (fig(rps=0.99, p99=5000, err=1), slo.NO_VERDICT),           # below the minimum rate: no verdict at all
    (fig(rps=0, p50=None, p99=None), slo.NO_VERDICT),
])
def test_judge(figures, verdict):
    assert slo.judge(SLO, figures)[0] == verdict


def test_judge_names_every_broken_bound_and_no_bounds_is_met():
    assert slo.judge(SLO, fig(p99=400, err=0.2))[1] == ["p99 400.0 ms > 250 ms", "error ratio 0.2000 > 0.05"]
    assert slo.judge(SLOSpec(min_requests_per_second=0), fig(p99=1e6, err=1)) == (slo.MET, [])
    assert slo.judge(SLOSpec(min_requests_per_second=0), fig(rps=0, p99=None))[0] == slo.NO_VERDICT


def test_settle_never_flips_faster_than_the_window():
    t = "2025-01-01T00:00:00Z"
    assert slo.settle(slo.VIOLATED, None, None, t, 60) == (slo.VIOLATED, t)              # first verdict: at once
    assert slo.settle(slo.MET, slo.VIOLATED, t, "2025-01-01T00:00:59Z", 60) == (slo.VIOLATED, t)
    assert slo.settle(slo.MET, slo.VIOLATED, t, "2025-01-01T00:01:00Z", 60) == \
        (slo.MET, "2025-01-01T00:01:00Z")
    assert slo.settle(slo.VIOLATED, slo.VIOLATED, t, "2025-01-01T09:00:00Z", 60) == (slo.VIOLATED, t)
    assert slo.settle(slo.MET, slo.VIOLATED, "garbage", t, 60) == (slo.VIOLATED, t)      # restarts the count


def test_a_flapping_load_changes_the_verdict_at_most_once_per_window():
    """A fault that comes and goes every interval: the raw verdict alternates, the published one may not."""
    block, changes, t0 = None, [], 1_735_689_600
    for i in range(40):                                        # 40 passes 15 s apart, window 60 s
        now = _ts(t0 + 15 * i)
        block, transition = slo.evaluate(SLO, fig(p99=400 if i % 2 else 100), block, 3, now)
        if transition is not None:
            changes.append(t0 + 15 * i)
    assert len(changes) >= 3                                   # it does follow the load, slowly
    assert all(b - a >= 60 for a, b in zip(changes, changes[1:]))


def _ts(epoch: int) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_evaluate_writes_only_material_moves():
    now = "2025-01-01T00:00:00Z"
    block, transition = slo.evaluate(SLO, fig(), None, 3, now)
    assert transition == (None, slo.MET) and block["slo"] == slo.MET and block["sloTransitionTime"] == now
    assert block == {"version": 3, "requestsPerSecond": 10.0, "errorRatio": 0.0, "windowSeconds": 60.0, "pods": 2,
                     "slo": "Met", "sloTransitionTime": now, "measureTime": now, "p50Ms": 20.0, "p99Ms": 100.0,
                     "message": "SLO met on version 3: 10.00 requests/s, error ratio 0.0000, p50 20.0 ms, p99 "
                                "100.0 ms over 60 s on 2 pod(s) (SLO p99 <= 250 ms, error ratio <= 0.05)"}
    later = "2025-01-01T00:00:30Z"
    for small in (fig(rps=10.9), fig(p99=109), fig(p50=20.9), fig(err=0.0009), fig(window=75)):
        assert slo.evaluate(SLO, small, block, 3, later) == (block, None)       # the very same block: no write
    for big in (fig(rps=11.5), fig(p99=115), fig(err=0.002), fig(pods=3), fig(p99=None)):
        new, _ = slo.evaluate(SLO, big, block, 3, later)
        assert new is not block and new["measureTime"] == later
    assert slo.evaluate(SLO, fig(p99=300), block, 3, later)[0]["slo"] == slo.MET   # held: Met 30 s ago
    later = "2025-01-01T00:01:00Z"
    violated, transition = slo.evaluate(SLO, fig(p99=300), block, 3, later)
    assert transition == (slo.MET, slo.VIOLATED) and violated["sloTransitionTime"] == later
    assert violated["message"].startswith("SLO violated on version 3: p99 300.0 ms > 250 ms (")


def test_evaluate_keeps_the_block_when_not_measured_and_drops_another_versions():
    block, _ = slo.evaluate(SLO, fig(), None, 3, "2025-01-01T00:00:00Z")
    assert slo.evaluate(SLO, None, block, 3, "2025-01-01T00:01:00Z") == (block, None)
    assert slo.evaluate(SLO, fig(version=2), block, 3, "2025-01-01T00:01:00Z") == (block, None)
    assert slo.evaluate(SLO, None, block, 4, "2025-01-01T00:01:00Z") == (None, None)   # a new version: afresh
    fresh, transition = slo.evaluate(SLO, fig(version=4, p99=300), block, 4, "2025-01-01T00:01:00Z")
    assert fresh["version"] == 4 and transition == (None, slo.VIOLATED)


def test_a_held_verdict_says_what_the_figures_say():
    t0 = "2025-01-01T00:00:00Z"
    block, _ = slo.evaluate(SLO, fig(p99=300), None, 3, t0)
    held, transition = slo.evaluate(SLO, fig(p99=100), block, 3, "2025-01-01T00:00:30Z")
    assert transition is None and held["slo"] == slo.VIOLATED and held["sloTransitionTime"] == t0
    assert "the figures say Met, but the verdict changes at most once per 60 s window" in held["message"]
    cleared, transition = slo.evaluate(SLO, fig(p99=100), held, 3, "2025-01-01T00:01:00Z")
    assert transition == (slo.VIOLATED, slo.MET) and cleared["slo"] == slo.MET


def test_no_verdict_message_names_the_minimum_rate():
    block, _ = slo.evaluate(SLO, fig(rps=0.2, p99=900), None, 3, "2025-01-01T00:00:00Z")
    assert block["slo"] == slo.NO_VERDICT
    assert block["message"].startswith("no SLO verdict on version 3: below 1 requests/s (0.20 requests/s")
