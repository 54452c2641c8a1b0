"""spec.parse(): defaults, typed values, SpecError naming the field, the bad-input corpus, the optimization hash."""
from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from modeldeploy.api import quantity
from modeldeploy.api import spec as S
from tests.integration import bad_inputs

ROOT = Path(__file__).resolve().parents[2]


def md(spec: dict, name: str = "digits", namespace: str | None = "ml") -> dict:
    meta = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "metadata": meta, "spec": spec}


MINIMAL = {"model": {"uri": "s3://models/digits/base"}}

DIGITS = {
    "model": {"uri": "s3://models/digits/base", "version": 3, "storageSecret": "model-store"},
    "optimization": {
        "pruning": {"sparsity": 0.5, "fineTuneEpochs": 2},
        "quantization": {"mode": "int8"},
        "dataset": {"uri": "s3://models/datasets/digits.npz"},
        "gates": {"maxAccuracyDrop": 0.01, "minCompression": 2.0},
        "outputUri": "s3://models/digits/optimized",
    },
    "serving": {"gpus": 1, "batching": {"maxBatchSize": 64}},
    "autoscaling": {"minReplicas": 1, "maxReplicas": 4},
}


def test_minimal_spec_gets_every_default():
    got = S.parse(md(MINIMAL))
    assert got == S.ModelDeploymentSpec(
        name="digits", namespace="ml",
        model=S.ModelSpec(uri="s3://models/digits/base", version=1, name="digits", storage_secret=None),
        serving=S.ServingSpec(image=f"tensorflow/serving:{S.TF_SERVING_VERSION}", replicas=1, gpus=0,
                              node_selector={}, tolerations=(), affinity={}, resources={}, batching=None),
        optimization=None, autoscaling=None,
        monitoring=S.MonitoringSpec(interval_seconds=30, failure_threshold=3, prometheus=True, rollback=True),
        rollout=S.RolloutSpec(progress_deadline_seconds=600))


def test_namespace_defaults_to_default():
    assert S.parse(md(MINIMAL, namespace=None)).namespace == "default"


def test_digits_demo_spec_is_typed_and_defaulted():
    got = S.parse(md(DIGITS))
    assert got.model == S.ModelSpec("s3://models/digits/base", 3, "digits", "model-store")
    assert got.optimization == S.OptimizationSpec(
        output_uri="s3://models/digits/optimized",
        pruning=S.PruningSpec(sparsity=0.5, fine_tune_epochs=2),
        quantization=S.QuantizationSpec(mode="int8", fine_tune_epochs=0),
        dataset=S.DatasetSpec(uri="s3://models/datasets/digits.npz"),
        gates=S.GatesSpec(max_accuracy_drop=0.01, min_compression=2.0),
        resources={}, node_selector={}, tolerations=(), backoff_limit=1, active_deadline_seconds=7200,
        ttl_seconds_after_finished=None)
    assert got.optimization.fine_tune_epochs == 2
    assert got.serving.image == f"tensorflow/serving:{S.TF_SERVING_VERSION}-gpu"
    assert got.serving.batching == S.BatchingSpec(max_batch_size=64, batch_timeout_micros=2000,
                                                  max_enqueued_batches=100, num_batch_threads=4)
    assert got.autoscaling == S.AutoscalingSpec(max_replicas=4, min_replicas=1, target_cpu_utilization=70, metrics=())


@pytest.mark.parametrize("gpus, image", [(0, S.DEFAULT_IMAGES.cpu), (1, S.DEFAULT_IMAGES.gpu)])
def test_default_image_follows_gpus(gpus, image):
    assert S.parse(md({**MINIMAL, "serving": {"gpus": gpus}})).serving.image == image


def test_explicit_image_wins_and_images_are_overridable():
    assert S.parse(md({**MINIMAL, "serving": {"image": "mirror/tfs:1", "gpus": 1}})).serving.image == "mirror/tfs:1"
    images = S.images_from_env({"MODELDEPLOY_SERVING_IMAGE": "m/cpu:1", "MODELDEPLOY_SERVING_IMAGE_GPU": "m/gpu:1"})
    assert S.parse(md(MINIMAL), images=images).serving.image == "m/cpu:1"
    assert S.parse(md({**MINIMAL, "serving": {"gpus": 1}}), images=images).serving.image == "m/gpu:1"
    assert S.images_from_env({}) == S.DEFAULT_IMAGES


def test_model_name_defaults_to_object_name_and_can_be_set():
    assert S.parse(md(MINIMAL, name="mnist")).model.name == "mnist"
    assert S.parse(md({"model": {"uri": "gs://b/m", "name": "digits-v2"}}, name="mnist")).model.name == "digits-v2"


@pytest.mark.parametrize("mode, epochs", [("qat", 1), ("dynamic", 0), ("float16", 0), ("none", 0)])
def test_quantization_epochs_default_by_mode(mode, epochs):
    opt = {"outputUri": "s3://m/o", "quantization": {"mode": mode}, "dataset": {"uri": "s3://m/d.npz"}}
    assert S.parse(md({**MINIMAL, "optimization": opt})).optimization.quantization.fine_tune_epochs == epochs


def test_empty_quantization_means_dynamic():
    opt = {"outputUri": "s3://m/o", "quantization": {}}
    assert S.parse(md({**MINIMAL, "optimization": opt})).optimization.quantization.mode == "dynamic"


def test_pruning_and_qat_share_one_training_run():
    opt = {"outputUri": "s3://m/o", "pruning": {"sparsity": 0.8, "fineTuneEpochs": 2},
           "quantization": {"mode": "qat", "fineTuneEpochs": 3}, "dataset": {"uri": "s3://m/d.npz"}}
    assert S.parse(md({**MINIMAL, "optimization": opt})).optimization.fine_tune_epochs == 3


@pytest.mark.parametrize("uri", ["s3://models/a", "gs://bucket/x/y_saved_model", "pvc://claim/models/m",
                                 "file:///models/m"])
def test_supported_uris(uri):
    assert S.parse(md({"model": {"uri": uri}})).model.uri == uri


def test_raw_kubernetes_structures_are_kept_as_written():
    tol = [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]
    aff = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}
    metrics = [{"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {"type": "AverageValue",
                                                                              "averageValue": "100"}}}]
    s = S.parse(md({**MINIMAL,
                    "serving": {"nodeSelector": {"pool": "gpu"}, "tolerations": tol, "affinity": aff,
                                "resources": {"limits": {"cpu": 2, "memory": "4Gi"}, "requests": {"cpu": "500m"}}},
                    "autoscaling": {"maxReplicas": 3, "metrics": metrics}}))
    assert s.serving.node_selector == {"pool": "gpu"}
    assert s.serving.tolerations == tuple(tol)
    assert s.serving.affinity == aff
    assert s.serving.resources == {"limits": {"cpu": 2, "memory": "4Gi"}, "requests": {"cpu": "500m"}}
    assert s.autoscaling.metrics == tuple(metrics)


def test_integral_float_is_accepted_as_integer():
    assert S.parse(md({"model": {"uri": "s3://m/a", "version": 2.0}})).model.version == 2


def test_parsed_values_are_immutable():
    s = S.parse(md(MINIMAL))
    with pytest.raises(Exception):
        s.model.version = 5  # type: ignore[misc]


def test_lower_version_is_a_valid_spec():
    # A manual rollback is just a spec with a lower version: nothing to reject.
    assert S.parse(md({"model": {"uri": "s3://m/a", "version": 1}})).model.version == 1


# --- errors ----------------------------------------------------------------------------------------------------

def test_spec_error_carries_field_and_fix():
    with pytest.raises(S.SpecError) as err:
        S.parse(md({**MINIMAL, "autoscaling": {"minReplicas": 5, "maxReplicas": 2}}))
    assert err.value.field == "spec.autoscaling.maxReplicas"
    assert "minReplicas (5)" in err.value.message
    assert str(err.value).startswith("spec.autoscaling.maxReplicas: ")


def test_int8_error_says_how_to_fix():
    with pytest.raises(S.SpecError) as err:
        S.parse(md({**MINIMAL, "optimization": {"outputUri": "s3://m/o", "quantization": {"mode": "int8"}}}))
    assert err.value.field == "spec.optimization.quantization.mode"
    assert "spec.optimization.dataset.uri" in err.value.message and "dynamic" in err.value.message


def test_unknown_field_lists_known_ones():
    with pytest.raises(S.SpecError) as err:
        S.parse(md({**MINIMAL, "serving": {"gpu": 1}}))
    assert err.value.field == "spec.serving.gpu"
    assert "gpus" in err.value.message


def test_missing_spec_and_bad_body():
    with pytest.raises(S.SpecError) as err:
        S.parse({"metadata": {"name": "x"}})
    assert err.value.field == "spec"
    with pytest.raises(S.SpecError):
        S.parse("not an object")  # type: ignore[arg-type]


def test_bool_is_not_an_integer():
    with pytest.raises(S.SpecError) as err:
        S.parse(md({**MINIMAL, "serving": {"replicas": True}}))
    assert err.value.field == "spec.serving.replicas"


def test_metric_type_needs_its_source():
    with pytest.raises(S.SpecError) as err:
        S.parse(md({**MINIMAL, "autoscaling": {"maxReplicas": 2, "metrics": [{"type": "External"}]}}))
    assert err.value.field == "spec.autoscaling.metrics[0].external"


_BASE, _CASES = bad_inputs.load()


def test_corpus_base_is_valid():
    S.parse(_BASE)


def test_corpus_is_large_enough():
    assert len(_CASES) >= 30


@pytest.mark.parametrize("case_id, body, field", _CASES, ids=[c[0] for c in _CASES])
def test_bad_input_corpus_is_rejected_naming_the_field(case_id, body, field):
    with pytest.raises(S.SpecError) as err:
        S.parse(body)
    assert field in str(err.value), f"{case_id}: {err.value}"


# --- examples --------------------------------------------------------------------------------------------------

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_the_three_examples_exist():
    assert {p.name for p in EXAMPLES} >= {"cpu-as-is.yaml", "gpu-pruned-int8-autoscaling.yaml",
                                          "gpu-float16-custom-nodes.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_parse(path):
    for doc in yaml.safe_load_all(path.read_text()):
        S.parse(doc)


# --- optimization hash and source URI ----------------------------------------------------------------------------

def test_optimization_hash_is_stable_short_hex():
    h = S.optimization_hash(S.parse(md(DIGITS)))
    assert len(h) == 8 and int(h, 16) >= 0
    assert h == S.optimization_hash(S.parse(md(copy.deepcopy(DIGITS))))


def test_optimization_hash_ignores_explicit_defaults_and_serving():
    explicit = copy.deepcopy(DIGITS)
    explicit["optimization"]["backoffLimit"] = 1
    explicit["serving"]["replicas"] = 5
    explicit["model"]["version"] = 9
    assert S.optimization_hash(S.parse(md(explicit))) == S.optimization_hash(S.parse(md(DIGITS)))


@pytest.mark.parametrize("path, value", [
    (("optimization", "pruning", "sparsity"), 0.8),
    (("optimization", "quantization", "mode"), "qat"),
    (("optimization", "outputUri"), "s3://models/digits/other"),
    (("optimization", "resources"), {"limits": {"memory": "8Gi"}}),
    (("model", "uri"), "s3://models/digits/base2"),
])
def test_optimization_hash_changes_with_what_the_job_does(path, value):
    changed = copy.deepcopy(DIGITS)
    target = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert S.optimization_hash(S.parse(md(changed))) != S.optimization_hash(S.parse(md(DIGITS)))


def test_source_uri():
    assert S.source_uri(S.parse(md(DIGITS)), 3) == "s3://models/digits/optimized/3"
    assert S.source_uri(S.parse(md(MINIMAL)), 3) == "s3://models/digits/base"
    trailing = copy.deepcopy(DIGITS)
    trailing["optimization"]["outputUri"] += "/"
    assert S.source_uri(S.parse(md(trailing)), 4) == "s3://models/digits/optimized/4"


def test_inputs_json_cannot_carry_are_refused_by_the_parser_naming_the_field():
    """NaN, a metadata list and a 3,000-deep affinity cannot reach the API server as JSON, but `modeldeploy
    render` and a buggy client can hand them to the parser: a SpecError naming the field, never a traceback."""
    nan = md({"model": {"uri": "s3://m/a"}, "optimization": {"outputUri": "s3://m/o", "dataset": {"uri": "s3://m/d"},
                                                             "gates": {"maxAccuracyDrop": float("nan")}}})
    with pytest.raises(S.SpecError) as err:
        S.parse(nan)
    assert err.value.field == "spec.optimization.gates.maxAccuracyDrop" and "NaN" in err.value.message
    body = md(MINIMAL)
    body["metadata"] = ["digits"]
    with pytest.raises(S.SpecError) as err:
        S.parse(body)
    assert err.value.field == "metadata"
    deep = cur = {}
    for _ in range(3000):
        cur["a"] = {}
        cur = cur["a"]
    with pytest.raises(S.SpecError) as err:
        S.parse(md({"model": {"uri": "s3://m/a"}, "serving": {"affinity": deep}}))
    assert err.value.field == "spec.serving.affinity" and "deeper than 32" in err.value.message


# --- spec.rollout: strategy canary -------------------------------------------------------------------------------

CANARY = {**MINIMAL, "serving": {"replicas": 4}, "monitoring": {"slo": {"maxP99LatencyMs": 250, "windowSeconds": 60}},
          "rollout": {"strategy": "canary", "steps": [{"weight": 10, "durationSeconds": 120},
                                                      {"weight": 50, "durationSeconds": 60}]}}


def test_canary_parses_with_defaults():
    r = S.parse(md(CANARY)).rollout
    assert r == S.RolloutSpec(strategy="canary", steps=(S.CanaryStep(10, 120), S.CanaryStep(50, 60)),
                              max_latency_ratio=1.2, max_error_ratio_increase=0.01)
    assert S.parse(md(MINIMAL)).rollout.strategy == "rolling"


def test_steps_are_kept_under_rolling_so_switching_strategy_is_one_field():
    body = {**CANARY, "rollout": dict(CANARY["rollout"], strategy="rolling")}
    assert S.parse(md(body)).rollout.steps == (S.CanaryStep(10, 120), S.CanaryStep(50, 60))


@pytest.mark.parametrize("edit, field, words", [
    ({"monitoring": {}}, "spec.rollout.strategy", "spec.monitoring.slo"),
    ({"rollout": {"strategy": "canary"}}, "spec.rollout.steps", "at least one step"),
    ({"serving": {"replicas": 1}}, "spec.serving.replicas", ">= 2"),
    ({"rollout": {"strategy": "canary", "steps": [{"weight": 10, "durationSeconds": 30}]}},
     "spec.rollout.steps[0].durationSeconds", "windowSeconds (60)"),
    ({"rollout": {"strategy": "canary", "steps": [{"weight": 50, "durationSeconds": 60},
                                                  {"weight": 50, "durationSeconds": 60}]}},
     "spec.rollout.steps[1].weight", "above the previous step's weight"),
    ({"rollout": {"strategy": "canary", "steps": [{"weight": 10, "duration": 60}]}},
     "spec.rollout.steps[0].duration", "unknown field"),
    ({"rollout": {"strategy": "canary", "steps": [10, 50]}}, "spec.rollout.steps[0]", "{weight, durationSeconds}"),
    ({"rollout": {"strategy": "canary", "steps": [{"weight": 10, "durationSeconds": 60}] * 11}},
     "spec.rollout.steps", "at most 10"),
])
def test_canary_refusals_name_the_field_and_the_fix(edit, field, words):
    with pytest.raises(S.SpecError) as err:
        S.parse(md({**CANARY, **edit}))
    assert err.value.field == field and words in err.value.message


def test_canary_with_autoscaling_needs_no_fixed_replicas():
    body = {**CANARY, "serving": {"replicas": 1}, "autoscaling": {"maxReplicas": 4}}
    assert S.parse(md(body)).rollout.strategy == "canary"


# --- the pydantic declaration behaves as the dataclasses did -----------------------------------------------------

def test_optimization_hash_is_pinned():
    # Job names of existing objects contain it: a change would start every optimization Job again.
    assert S.optimization_hash(S.parse(md(DIGITS))) == "f1eb7b7a"


def test_parsed_values_are_dataclasses():
    s = S.parse(md(DIGITS))
    serving = dataclasses.replace(s.serving, replicas=3)
    assert serving.replicas == 3 and serving.batching == s.serving.batching and serving.image == s.serving.image
    assert dataclasses.asdict(s.optimization)["output_uri"] == "s3://models/digits/optimized"


def test_first_error_is_the_first_in_declaration_order():
    # pydantic reports missing fields after the others; the parser still names the earliest field.
    opt = {"pruning": {"sparsity": 2}}
    with pytest.raises(S.SpecError) as err:
        S.parse(md({**MINIMAL, "optimization": opt}))
    assert err.value.field == "spec.optimization.pruning.sparsity"
    with pytest.raises(S.SpecError) as err:
        S.parse(md({**MINIMAL, "optimization": {"pruning": {"sparsity": 0.5}}}))
    assert (err.value.field, err.value.message) == ("spec.optimization.outputUri", "is required: set a string")


@pytest.mark.parametrize("q", ["500m", "0.5", "2", "1.5", "4Gi", "1024Mi", "1e3", "1E", "100k", ".5", "+1", 3, 2.5])
def test_a_quantity_the_spec_accepts_has_the_value_kubernetes_gives_it(q):
    from kubernetes.utils import parse_quantity
    assert re.fullmatch(quantity.PATTERN, str(q)) and quantity.value(q) == parse_quantity(q)


@pytest.mark.parametrize("q", ["lots", "1Qi", "", True, None, [1]])
def test_what_is_not_a_quantity_has_no_value(q):
    assert quantity.value(q) is None
