"""contracts/annotations.py: the serving target the builders write on the pod template and the rollback target
on the Service are what the controller reads back; templates from before the annotation still read."""
import copy

import pytest

from modeldeploy.contracts import annotations
from modeldeploy.controller import observe
from modeldeploy.resources.canary import build_canary_deployment
from modeldeploy.resources.service import build_service
from modeldeploy.resources.deployment import ServingTarget, build_deployment
from tests.unit.test_resources import IMAGES, OPTIMIZED, md

TARGETS = [
    ({}, ServingTarget(4, "tensorflow/serving:x", "s3://m/base")),
    ({"optimization": OPTIMIZED}, ServingTarget(3, "tensorflow/serving:y", "s3://m/opt/3", "tflite")),
    ({"optimization": OPTIMIZED, "serving": {"gpus": 1}},
     ServingTarget(5, "tensorflow/serving:y-gpu", "s3://m/opt/5", "tensorflow")),
]


def pod_of(template: dict, ready: bool = True) -> dict:
    """A pod the ReplicaSet makes from `template`."""
    return dict(copy.deepcopy(template), status={"conditions": [{"type": "Ready", "status": str(ready)}]})


def without_annotation(template: dict) -> dict:
    """The template as an operator before the serving-target annotation wrote it."""
    old = copy.deepcopy(template)
    del old["metadata"]["annotations"][annotations.SERVING_TARGET]
    return old


@pytest.mark.parametrize("spec, target", TARGETS)
def test_serving_target_round_trip(spec, target):
    s = md(**spec)
    for dep in (build_deployment(s, target, IMAGES), build_canary_deployment(md(**spec), target, 1, IMAGES)):
        template = dep["spec"]["template"]
        assert observe.target_of_template(template) == target
        assert observe.deployment_view(dep).target == target
        assert observe.is_ready_pod_of(pod_of(template), target)
        # Pre-annotation templates and their pods still read, from the pull init container's arguments.
        assert observe.target_of_template(without_annotation(template)) == target
        assert observe.is_ready_pod_of(pod_of(without_annotation(template)), target)


def test_the_annotation_not_the_arguments_is_read():
    template = build_deployment(md(), ServingTarget(4, "tf:x", "s3://m/base"), IMAGES)["spec"]["template"]
    template["spec"]["initContainers"][0]["args"] = ["s3://elsewhere/9", "/models/digits/9", "--runtime", "tflite"]
    assert observe.target_of_template(template) == ServingTarget(4, "tf:x", "s3://m/base")
    template["metadata"]["annotations"][annotations.SERVING_TARGET] = "not json"
    assert observe.target_of_template(template) is None


def test_last_good_round_trip():
    target = ServingTarget(2, "tensorflow/serving:2.20.0", "s3://m/opt/2", "tflite")
    service = build_service(md(), last_good=target)
    assert observe.recorded_last_good(service) == target
    assert observe.recorded_last_good(build_service(md())) is None
    assert observe.recorded_last_good(None) is None


@pytest.mark.parametrize("value, expected", [
    ('{"image":"i","uri":"u","version":2}', {"version": 2, "image": "i", "uri": "u", "runtime": "tensorflow"}),
    ('{"image":"i","runtime":"tflite","uri":"u","version":"3"}',
     {"version": 3, "image": "i", "uri": "u", "runtime": "tflite"}),
    ('{"image":"i"}', None), ("[]", None), ("", None), ("{", None),
])
def test_read_target(value, expected):
    assert annotations.read_target({annotations.LAST_GOOD: value}, annotations.LAST_GOOD) == expected


def test_target_value_is_stable():
    assert annotations.target_value(2, "i", "u") == '{"image":"i","runtime":"tensorflow","uri":"u","version":2}'
