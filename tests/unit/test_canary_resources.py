"""The canary's builders: the replica split per step, the canary Deployment as a whole object, and selectors
that never overlap while the Service selects both tracks (pure, no cluster)."""
from __future__ import annotations

import copy

import pytest

from modeldeploy.api import names
from modeldeploy.api import spec as specmod
from modeldeploy.resources import canary, render
from modeldeploy.resources.deployment import ServingTarget, build_deployment
from modeldeploy.resources.service import build_service

SLO = {"slo": {"maxP99LatencyMs": 250, "windowSeconds": 60}}
STEPS = [{"weight": 10, "durationSeconds": 60}, {"weight": 50, "durationSeconds": 60}]
NEW = ServingTarget(4, "tensorflow/serving:2.21.0", "s3://models/digits/base", "tensorflow")


def md(strategy="canary", replicas=4, **spec):
    body = {"model": {"uri": "s3://models/digits/base", "version": 4}, "serving": {"replicas": replicas},
            "monitoring": SLO, "rollout": {"strategy": strategy, "steps": STEPS}}
    body.update(spec)
    return specmod.parse({"metadata": {"name": "digits", "namespace": "ml"}, "spec": body})


@pytest.mark.parametrize("weight, replicas, autoscaled, expected", [
    (10, 4, False, (1, 3)),          # ceil(0.4) = 1
    (50, 4, False, (2, 2)),
    (60, 4, False, (3, 1)),          # ceil(2.4) = 3
    (99, 4, False, (3, 1)),          # the stable keeps at least one
    (1, 2, False, (1, 1)),           # the canary runs at least one
    (50, 2, False, (1, 1)),
    (25, 8, False, (2, 6)),          # exact: no rounding up of 2.0000001
    (10, 1000, False, (100, 900)),
    (10, 4, True, (1, None)),        # 1 / (4 + 1) = 20% >= 10%
    (50, 4, True, (4, None)),        # 4 / 8 = 50%
    (20, 4, True, (1, None)),        # exactly 1 / 5
    (90, 1, True, (9, None)),
])
def test_split(weight, replicas, autoscaled, expected):
    s = canary.split(weight, replicas, autoscaled)
    assert (s.canary, s.stable) == expected
    if not autoscaled:
        assert s.canary + s.stable == replicas


def test_canary_deployment_is_the_serving_deployment_plus_the_track():
    spec = md()
    expected = copy.deepcopy(build_deployment(spec, NEW))
    track = {"modeldeploy.io/track": "canary"}
    expected["metadata"]["name"] = "digits-canary"
    expected["metadata"]["labels"].update(track)
    expected["spec"]["replicas"] = 1
    expected["spec"]["selector"] = {"matchLabels": {**names.selector("digits"), **track}}
    expected["spec"]["template"]["metadata"]["labels"].update(track)
    assert canary.build_canary_deployment(spec, NEW, 1) == expected
    assert expected["spec"]["template"]["metadata"]["labels"]["modeldeploy.io/version"] == "4"


def test_canary_deployment_sets_replicas_under_autoscaling():
    spec = md(replicas=1, autoscaling={"maxReplicas": 6})
    assert "replicas" not in build_deployment(spec, NEW)["spec"]
    assert canary.build_canary_deployment(spec, NEW, 3)["spec"]["replicas"] == 3


def _matches(selector: dict, labels: dict) -> bool:
    """Label selector semantics (matchLabels and the NotIn/In expressions we use)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or selector).items()
           if k not in ("matchLabels", "matchExpressions")):
        return False
    for e in selector.get("matchExpressions") or ():
        value = labels.get(e["key"])
        if e["operator"] == "NotIn" and value in e["values"]:
            return False
        if e["operator"] == "In" and value not in e["values"]:
            return False
    return True


def test_selectors_do_not_overlap_and_the_service_selects_both_tracks():
    spec = md()
    stable = build_deployment(spec, NEW)
    cand = canary.build_canary_deployment(spec, NEW, 1)
    stable_pod = stable["spec"]["template"]["metadata"]["labels"]
    canary_pod = cand["spec"]["template"]["metadata"]["labels"]
    assert _matches(stable["spec"]["selector"], stable_pod) and not _matches(stable["spec"]["selector"], canary_pod)
    assert _matches(cand["spec"]["selector"], canary_pod) and not _matches(cand["spec"]["selector"], stable_pod)
    service = build_service(spec)["spec"]["selector"]
    assert _matches(service, stable_pod) and _matches(service, canary_pod)


def test_stable_pods_are_the_same_under_both_strategies():
    """Switching strategy changes the stable selector only: the pod template (so the pods) stays."""
    rolling, canaried = build_deployment(md("rolling"), NEW), build_deployment(md("canary"), NEW)
    assert rolling["spec"]["template"] == canaried["spec"]["template"]
    assert rolling["spec"]["selector"] == {"matchLabels": names.selector("digits")}
    assert canaried["spec"]["selector"]["matchExpressions"] == [
        {"key": "modeldeploy.io/track", "operator": "NotIn", "values": ["canary"]}]


def test_build_serving_gives_the_stable_its_share():
    spec = md()
    assert render.build_serving(spec, NEW)["Deployment"]["spec"]["replicas"] == 4
    assert render.build_serving(spec, NEW, replicas=3)["Deployment"]["spec"]["replicas"] == 3
