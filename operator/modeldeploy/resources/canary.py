"""The canary Deployment of spec.rollout.strategy canary, and how a step splits the replicas. Pure.

The canary runs the new version next to the stable Deployment, with the pod labels the Service selects on, so
the Service's endpoints hold both and traffic splits by ready endpoints, per connection (kube-proxy picks an
endpoint per connection, not per request: a client that keeps one connection open stays on one track). Canary
pods add `modeldeploy.io/track: canary`; the canary Deployment selects on it and the stable Deployment's
selector excludes it (deployment.serving_selector), so the two selectors never overlap.

- `split(weight, replicas, autoscaled) -> Split`: replicas of each track in a step.
- `build_canary_deployment(spec, target, replicas, images)`: the canary Deployment for `target`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from modeldeploy.api import names
from modeldeploy.api.spec import ModelDeploymentSpec
from modeldeploy.resources.common import DEFAULT_OPERATOR_IMAGES, OperatorImages
from modeldeploy.resources.deployment import ServingTarget, build_deployment


@dataclass(frozen=True)
class Split:
    """Replicas per track in one step; `stable` None: the HPA sizes the stable Deployment."""
    canary: int
    stable: int | None


def split(weight: int, replicas: int, autoscaled: bool = False) -> Split:
    """The replicas of a step of `weight` percent.

    Fixed replicas: the canary runs ceil(weight% x replicas), at least 1, and the stable keeps the rest and at
    least 1 (the parser refuses canary below 2 replicas), so the total stays `replicas`. Autoscaled: the HPA keeps
    sizing the stable Deployment (`replicas` is its current size) and the canary gets enough on top for its
    share of all ready endpoints to reach `weight`: c / (replicas + c) >= weight%.
    """
    if autoscaled:
        share = weight / 100
        return Split(canary=max(1, math.ceil(share * max(replicas, 1) / (1 - share) - 1e-9)), stable=None)
    canary = min(max(1, math.ceil(weight * replicas / 100 - 1e-9)), max(replicas - 1, 1))
    return Split(canary=canary, stable=max(replicas - canary, 1))


def build_canary_deployment(spec: ModelDeploymentSpec, target: ServingTarget, replicas: int,
                            images: OperatorImages = DEFAULT_OPERATOR_IMAGES) -> dict:
    """The canary Deployment: the serving Deployment's pods for `target`, plus the track label, `replicas` of
    them whatever autoscaling says (the HPA scales the stable Deployment only)."""
    dep = build_deployment(spec, target, images)
    track = {names.LABEL_TRACK: names.TRACK_CANARY}
    dep["metadata"]["name"] = names.canary_name(spec.name)
    dep["metadata"]["labels"] = {**dep["metadata"]["labels"], **track}
    dep["spec"]["selector"] = {"matchLabels": {**names.selector(spec.name), **track}}
    template = dep["spec"]["template"]
    template["metadata"]["labels"] = {**template["metadata"]["labels"], **track}
    dep["spec"] = {"replicas": replicas, **{k: v for k, v in dep["spec"].items() if k != "replicas"}}
    return dep
