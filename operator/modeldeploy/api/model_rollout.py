"""The declaration of spec.monitoring and spec.rollout (see fields.py for how parser, CRD and docs follow)."""
from __future__ import annotations

from modeldeploy.api import limits as L
from modeldeploy.api.fields import ApiObject, Invalid, Meta, Rule, api_object, field

SLO_WINDOW, MONITOR_INTERVAL = 120, 30   # defaults the CEL rules need too (has() is false for a defaulted field)


@api_object
class SLOSpec(ApiObject):
    """spec.monitoring.slo: bounds on what TF Serving's own metrics show over a window. A bound left out is not
    checked; with none set, the figures are only reported."""
    max_p99_latency_ms: int | None = field(
        "Largest allowed 99th-percentile request latency over the window, in milliseconds, as TF Serving measures "
        "it (interpolated within its histogram buckets, like Prometheus' histogram_quantile; the buckets grow by "
        "1.8x, so that is the resolution).", None, minimum=1, maximum=L.MAX_SLO_LATENCY_MS)
    max_error_ratio: float | None = field(
        "Largest allowed share of requests answered with a server-side error over the window (0.01 = 1%). Client "
        "errors (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE, CANCELLED) count as requests, not as errors.",
        None, minimum=0, maximum=1)
    # Below this no verdict is drawn: too few requests to judge.
    min_requests_per_second: float = field(
        "Below this many requests per second over the window no verdict is drawn (the SLO state is NoVerdict): too "
        "few requests say nothing about a p99.", 1.0, minimum=0, maximum=L.MAX_SLO_RATE)
    window_seconds: int = field("The window the figures and the verdict cover, in seconds; at least "
                                "intervalSeconds.", SLO_WINDOW, minimum=L.MIN_SLO_WINDOW, maximum=L.MAX_SLO_WINDOW)


def _slo_needs_prometheus(m: MonitoringSpec) -> None:
    if m.slo is not None and not m.prometheus:
        raise Invalid(L.SLO_NEEDS_PROMETHEUS_MESSAGE, ".slo")


def _window_holds_an_interval(m: MonitoringSpec) -> None:
    if m.slo is not None and m.slo.window_seconds < m.interval_seconds:
        raise Invalid(f"must be >= spec.monitoring.intervalSeconds ({m.interval_seconds}), got "
                      f"{m.slo.window_seconds}: {L.SLO_WINDOW_MESSAGE}", ".slo.windowSeconds")


@api_object
class MonitoringSpec(ApiObject):
    """spec.monitoring: health checks, Prometheus metrics, service-level objectives and automatic rollback."""
    RULES = (
        Rule("!has(self.slo) || !has(self.prometheus) || self.prometheus",
             "spec.monitoring.slo " + L.SLO_NEEDS_PROMETHEUS_MESSAGE, _slo_needs_prometheus, field_path=".slo"),
        # Static message: string(int) in a messageExpression has an unbounded cost estimate.
        Rule(f"!has(self.slo) || (has(self.slo.windowSeconds) ? self.slo.windowSeconds : {SLO_WINDOW}) >= "
             f"(has(self.intervalSeconds) ? self.intervalSeconds : {MONITOR_INTERVAL})",
             "spec.monitoring.slo.windowSeconds must be >= spec.monitoring.intervalSeconds: " + L.SLO_WINDOW_MESSAGE,
             _window_holds_an_interval, field_path=".slo.windowSeconds"),
    )
    interval_seconds: int = field("Seconds between health checks.", MONITOR_INTERVAL, minimum=5, maximum=3600)
    failure_threshold: int = field("Consecutive failed checks of a new version before it is rolled back.", 3,
                                   minimum=1, maximum=100)
    prometheus: bool = field("Enable TF Serving's Prometheus endpoint (/monitoring/prometheus/metrics on 8501) and "
                             "scrape annotations.", True)
    rollback: bool = field("Roll back to status.model.lastGoodVersion when a new version fails its rollout.", True)
    slo: SLOSpec | None = field(
        "Service-level objectives of the serving version, judged from TF Serving's own Prometheus metrics "
        "(:tensorflow:serving:request_count and :tensorflow:serving:request_latency), which the operator scrapes "
        "from each ready serving pod at every monitor interval and sums over the pods. The figures over the window "
        "go to status.serving.metrics (written only when they move materially); a violated bound sets "
        "Degraded=True with reason SLOViolated (Ready stays True: the model still answers), a Warning Event and "
        "the operator's modeldeploy_model_slo_violated metric. The verdict changes at most once per window, so it "
        "never flaps. A bound left out is not checked; with none, the figures are only reported. Needs "
        "prometheus: true.", None)


@api_object
class CanaryStep(ApiObject):
    """One step of spec.rollout.steps: the canary runs `weight` percent of the replicas for `duration_seconds`."""
    weight: int = field("Percent of the replicas the canary runs in this step (1-99).", minimum=1, maximum=99)
    duration_seconds: int = field(
        "Seconds the step lasts at least; at least spec.monitoring.slo.windowSeconds, so its verdict covers a "
        "window within the step.", minimum=L.MIN_STEP_SECONDS, maximum=L.MAX_STEP_SECONDS)


def _weights_increase(r: RolloutSpec) -> None:
    for i in range(1, len(r.steps)):
        if r.steps[i].weight <= r.steps[i - 1].weight:
            raise Invalid(f"must be above the previous step's weight ({r.steps[i - 1].weight}), got "
                          f"{r.steps[i].weight}: a canary only grows until it is promoted", f".steps[{i}].weight")


@api_object
class RolloutSpec(ApiObject):
    """spec.rollout: how a new version replaces the serving one. `steps` and the two margins are read by strategy
    canary only (kept under rolling, so switching strategy is a one-field edit)."""
    # isSorted (Kubernetes' CEL list library) gives the order; exists_one makes it strict.
    RULES = (Rule("!has(self.steps) || (self.steps.map(s, s.weight).isSorted() && "
                  "self.steps.all(s, self.steps.exists_one(t, t.weight == s.weight)))",
                  "spec.rollout.steps: weights must be strictly increasing: a canary only grows until it is promoted",
                  _weights_increase, field_path=".steps"),)
    progress_deadline_seconds: int = field(
        "Seconds a rollout may take before it counts as failed (and is rolled back when spec.monitoring.rollback "
        "is true).", 600, minimum=30, maximum=86400)
    strategy: str = field(
        "rolling: the serving Deployment's rolling update replaces every pod (maxUnavailable 0). canary: a new "
        "version starts as a second Deployment (<name>-canary) behind the same Service, with a share of the "
        "replicas per step; the Service spreads connections over the ready endpoints of both, so the split is per "
        "connection (as kube-proxy's), not per request. Each step lasts durationSeconds and ends when the canary "
        "met spec.monitoring.slo and was no worse than the stable version by the margins below; after the last "
        "step the canary is promoted (the serving Deployment rolls to it and the canary Deployment goes). A broken "
        "bound or margin at any check rolls back at once: the canary is removed, the stable version keeps serving, "
        "and Stalled=True (reason RolledBack) carries the figures that failed. Below minRequestsPerSecond there is "
        "no verdict: the step waits, and past its duration holds (not proven, status.rollout.phase Holding) until "
        "traffic gives one. Needs spec.monitoring.slo, steps, and spec.serving.replicas >= 2 or spec.autoscaling.",
        "rolling", enum=L.ROLLOUT_STRATEGIES, enum_word="strategy")
    steps: tuple[CanaryStep, ...] = field(
        "Canary steps, weights strictly increasing (used by strategy canary only). With fixed replicas the canary "
        "runs ceil(weight% x replicas) of them (at least 1, the stable version keeps the rest and at least 1, the "
        "total stays spec.serving.replicas); with autoscaling the HPA keeps sizing the stable Deployment and the "
        "canary gets enough replicas on top for its weight.", (), max_items=L.MAX_CANARY_STEPS, noun="steps",
        what="a list of {weight, durationSeconds}", items=Meta("One canary step."))
    # canary p99 <= stable p99 x max_latency_ratio; canary error ratio <= stable's + max_error_ratio_increase.
    max_latency_ratio: float = field(
        "Canary margin on latency: the canary's p99 must stay at or below the stable version's p99 times this "
        "(1.2: at most 20% slower), over the same window. Judged only while both have a verdict (at least "
        "minRequestsPerSecond each). TF Serving's histogram buckets grow by 1.8x and the quantiles are interpolated "
        "within them, so ratios close to 1 compare figures within one bucket.", 1.2, minimum=1, maximum=100)
    max_error_ratio_increase: float = field(
        "Canary margin on errors: the canary's error ratio must stay at or below the stable version's plus this "
        "(0.01: one percentage point more), over the same window.", 0.01, minimum=0, maximum=1)
