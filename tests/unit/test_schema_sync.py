"""The CRD schema and spec.py agree, both ways: fields, defaults, bounds, enums, required fields.

The CRD is generated (operator/modeldeploy/api/crd.py); the committed crds/ and docs/api.md must equal the
generator's output, so `kubectl explain` and the API reference never drift from the parser.
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from modeldeploy.api import apidoc, crd
from modeldeploy.api import spec as S

ROOT = Path(__file__).resolve().parents[2]
SPEC_SCHEMA = crd.spec_properties()
ROOT_SCHEMA = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

# Parsed fields that deliberately have no schema default: resolved from other fields at parse time.
RESOLVED_DEFAULTS = {
    "spec.model.name",                            # metadata.name
    "spec.serving.image",                         # the pinned CPU or GPU image, by spec.serving.gpus
    "spec.optimization.quantization.fineTuneEpochs",   # 1 for qat, else unused
}


def _dataclass_of(hint) -> type | None:
    """The dataclass inside `X | None`, or None for leaves."""
    for arg in typing.get_args(hint) or (hint,):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _fields(cls) -> dict[str, tuple[dataclasses.Field, object]]:
    hints = typing.get_type_hints(cls)
    return {S.json_name(f): (f, hints[f.name]) for f in dataclasses.fields(cls)
            if not (cls is S.ModelDeploymentSpec and f.name in S.METADATA_FIELDS)}


def _pairs(schema: dict = SPEC_SCHEMA, cls=S.ModelDeploymentSpec, path: str = "spec"):
    """Yield (path, schema node, dataclass or None, attribute path) for every field in either model."""
    fields = _fields(cls)
    props = schema.get("properties", {})
    for name in sorted(set(props) | set(fields)):
        p = f"{path}.{name}"
        yield p, props.get(name), fields.get(name)
        if name in props and name in fields:
            sub = _dataclass_of(fields[name][1])
            if sub is not None:
                yield from _pairs(props[name], sub, p)


ALL = list(_pairs())


def test_committed_crd_is_generated():
    assert (ROOT / crd.CRD_FILE).read_text() == crd.render_yaml(), \
        "crds/ is stale: run `python -m modeldeploy.api.crd` from the repository root"


def test_committed_api_doc_is_generated():
    assert (ROOT / crd.DOC_FILE).read_text() == apidoc.render_markdown(crd.crd()), \
        "docs/api.md is stale: run `python -m modeldeploy.api.crd` from the repository root"


@pytest.mark.parametrize("path, schema, field", ALL, ids=[a[0] for a in ALL])
def test_every_field_is_in_both(path, schema, field):
    assert schema is not None, f"{path} is parsed but missing from the CRD schema"
    assert field is not None, f"{path} is in the CRD schema but unknown to spec.py"
    assert schema.get("description"), f"{path} has no description (kubectl explain shows it)"
    sub = _dataclass_of(field[1])
    if sub is not None:
        assert schema.get("type") == "object" and schema.get("properties"), f"{path} should be a typed object"
        assert set(schema.get("required", [])) == {
            S.json_name(f) for f in dataclasses.fields(sub)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            and not (sub is S.ModelDeploymentSpec and f.name in S.METADATA_FIELDS)}, \
            f"{path}: schema `required` and the dataclass's fields without defaults differ"


# --- a body in which every object exists, so every leaf can be set alone ------------------------------------------

SEARCH = "spec.optimization.search"


def _with_search(body: dict, path: str, search: dict) -> dict:
    """search replaces pruning and quantization: the body for a path under it has search instead."""
    if path.startswith(SEARCH):
        opt = body["spec"]["optimization"]
        del opt["pruning"], opt["quantization"]
        opt["search"] = search
        opt["activeDeadlineSeconds"] = S.MAX_DEADLINE_SECONDS    # above every budget the bounds test sets
    return body


def full_body(path: str = "") -> dict:
    return _with_search(_full_body(), path, {"sparsities": [0, 0.5], "modes": ["int8"], "objective": "size",
                                             "timeBudgetSeconds": 600, "fineTuneEpochs": 1})


def defaults_body(path: str = "") -> dict:
    """Every object present with only its required fields."""
    return _with_search(_defaults_body(), path, {"sparsities": [0.5], "modes": ["dynamic"]})


def _full_body() -> dict:
    return {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "m"},
            "spec": {
                "model": {"uri": "s3://m/base", "version": 1, "name": "m", "storageSecret": "s"},
                "optimization": {"outputUri": "s3://m/opt", "pruning": {"sparsity": 0.5, "fineTuneEpochs": 1},
                                 "quantization": {"mode": "qat"}, "dataset": {"uri": "s3://m/d.npz"},
                                 "gates": {"maxAccuracyDrop": 0.1, "minCompression": 2.0},
                                 "export": {"onnx": True}},
                "serving": {"batching": {}},
                "autoscaling": {"minReplicas": 1, "maxReplicas": 1000},
                # The widest window, so every intervalSeconds the bounds test sets stays below it.
                "monitoring": {"slo": {"maxP99LatencyMs": 250, "maxErrorRatio": 0.05, "minRequestsPerSecond": 1,
                                       "windowSeconds": S.MAX_SLO_WINDOW}},
                # Steps as long as that window, so strategy canary (the enum test) parses too.
                "rollout": {"steps": [{"weight": 20, "durationSeconds": S.MAX_SLO_WINDOW},
                                      {"weight": 60, "durationSeconds": S.MAX_SLO_WINDOW}],
                            "maxLatencyRatio": 1.5, "maxErrorRatioIncrease": 0.02}}}


def _defaults_body() -> dict:
    return {"metadata": {"name": "m"}, "spec": {
        "model": {"uri": "s3://m/base"},
        "optimization": {"outputUri": "s3://m/opt", "pruning": {"sparsity": 0.5}, "quantization": {},
                         "dataset": {"uri": "s3://m/d.npz"}, "gates": {}, "export": {}},
        "serving": {"batching": {}}, "autoscaling": {"maxReplicas": 5}, "monitoring": {"slo": {}},
        "rollout": {}}}


def _set(body: dict, path: str, value) -> dict:
    body = copy.deepcopy(body)
    *parents, last = path.split(".")
    node = body
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return body


def _attr(parsed, path: str):
    value = parsed
    for name in path.split(".")[1:]:
        cls = type(value)
        field = next(f for f in dataclasses.fields(cls) if S.json_name(f) == name)
        value = getattr(value, field.name)
    return value


LEAVES = [(p, s) for p, s, f in ALL if s is not None and f is not None and _dataclass_of(f[1]) is None]
REQUIRED_LEAVES = {f"{p}.{r}" for p, s, f in ALL if s is not None for r in s.get("required", [])}


@pytest.mark.parametrize("path, schema", LEAVES, ids=[p for p, _ in LEAVES])
def test_defaults_agree(path, schema):
    parsed = _attr(S.parse(defaults_body(path)), path)
    if "default" in schema:
        assert parsed == schema["default"], f"{path}: schema default {schema['default']!r}, parser {parsed!r}"
    elif path not in RESOLVED_DEFAULTS | REQUIRED_LEAVES:
        assert parsed in (None, {}, ()), f"{path}: parser defaults to {parsed!r} but the schema has no default"


OBJECT_DEFAULTS = [(p, s) for p, s, f in ALL if s is not None and "default" in s and s.get("type") == "object"]


@pytest.mark.parametrize("path, schema", OBJECT_DEFAULTS, ids=[p for p, _ in OBJECT_DEFAULTS])
def test_defaulted_objects_parse_like_their_default(path, schema):
    body = {"metadata": {"name": "m"}, "spec": {"model": {"uri": "s3://m/base"}}}
    assert S.parse(body) == S.parse(_set(body, path, schema["default"]))


def _bounds_cases():
    for path, schema in LEAVES:
        t = schema.get("type")
        if t not in ("integer", "number"):
            continue
        exclusive = schema.get("exclusiveMinimum", False)
        step = 1 if t == "integer" else 0.001
        if "minimum" in schema:
            lo = schema["minimum"]
            yield path, (lo + step if exclusive else lo), True
            yield path, (lo if exclusive else lo - step), False
        if "maximum" in schema:
            hi = schema["maximum"]
            yield path, (hi - step if schema.get("exclusiveMaximum") else hi), True
            yield path, (hi if schema.get("exclusiveMaximum") else hi + step), False


BOUNDS = list(_bounds_cases())


@pytest.mark.parametrize("path, value, ok", BOUNDS, ids=[f"{p}={v}" for p, v, _ in BOUNDS])
def test_bounds_agree(path, value, ok):
    body = _set(full_body(path), path, value)
    if ok:
        S.parse(body)
    else:
        with pytest.raises(S.SpecError) as err:
            S.parse(body)
        assert err.value.field == path


def test_every_number_has_bounds():
    unbounded = [p for p, s in LEAVES if s.get("type") in ("integer", "number") and "minimum" not in s]
    assert unbounded == []


ENUMS = [(p, v) for p, s in LEAVES for v in s.get("enum", [])]


@pytest.mark.parametrize("path, value", ENUMS, ids=[f"{p}={v}" for p, v in ENUMS])
def test_enum_values_are_accepted(path, value):
    assert _attr(S.parse(_set(full_body(path), path, value)), path) == value


@pytest.mark.parametrize("path", sorted({p for p, _ in ENUMS}))
def test_values_outside_enum_are_rejected(path):
    with pytest.raises(S.SpecError) as err:
        S.parse(_set(full_body(path), path, "no-such-value"))
    assert err.value.field == path


REQUIRED = [f"{p}.{r}" for p, s, f in ALL if s is not None for r in s.get("required", [])] + ["spec.model"]


@pytest.mark.parametrize("path", REQUIRED)
def test_required_fields_agree(path):
    body = full_body(path)
    *parents, last = path.split(".")
    node = body
    for key in parents:
        node = node[key]
    del node[last]
    with pytest.raises(S.SpecError) as err:
        S.parse(body)
    assert err.value.field == path


def test_printer_columns_and_scale_paths_exist_in_schema():
    version = crd.crd()["spec"]["versions"][0]
    paths = [c["jsonPath"] for c in version["additionalPrinterColumns"] if c["jsonPath"] != ".metadata.creationTimestamp"]
    scale = version["subresources"]["scale"]
    paths += [scale["specReplicasPath"], scale["statusReplicasPath"], scale["labelSelectorPath"]]
    for jp in paths:
        node = ROOT_SCHEMA
        for key in jp.split("[")[0].strip(".").split("."):
            node = node["properties"][key]
        assert node.get("type"), jp
    assert [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c] == [
        "Ready", "Phase", "Version", "Compression", "Accuracy-Drop", "Replicas", "Canary-Step", "SLO", "Age"]


def _walk(node, path="", out=None):
    out = [] if out is None else out
    out.append((path, node))
    for name, sub in (node.get("properties") or {}).items():
        _walk(sub, f"{path}.{name}", out)
    if "items" in node:
        _walk(node["items"], f"{path}[]", out)
    if isinstance(node.get("additionalProperties"), dict):
        _walk(node["additionalProperties"], f"{path}{{}}", out)
    return out


PRESERVE_ALLOWED = {".spec.serving.affinity", ".status.kopf"} | {
    f".spec.autoscaling.metrics[].{k}" for k in ("resource", "pods", "object", "external", "containerResource")}


def test_schema_is_structural_and_preserves_unknown_fields_only_where_needed():
    nodes = _walk(ROOT_SCHEMA)
    for path, node in nodes:
        assert node.get("type") or node.get("x-kubernetes-int-or-string"), f"{path or '<root>'} has no type"
    preserved = {p for p, n in nodes if n.get("x-kubernetes-preserve-unknown-fields")}
    assert preserved == PRESERVE_ALLOWED


STATUS_FIELDS = ["observedGeneration", "phase", "conditions", "selector",
                 "model.servingVersion", "model.lastGoodVersion", "model.uri", "model.requestedVersion",
                 "optimization.job", "optimization.compressionRatio", "optimization.accuracyDrop",
                 "optimization.originalBytes", "optimization.optimizedBytes", "optimization.compressedBytes",
                 "optimization.sparsity", "optimization.baselineAccuracy", "optimization.optimizedAccuracy",
                 "optimization.baselineLatencyMs", "optimization.optimizedLatencyMs", "optimization.metric",
                 "optimization.quantization", "optimization.message",
                 "serving.deployment", "serving.service", "serving.replicas", "serving.readyReplicas",
                 "serving.restUrl", "serving.grpcAddress",
                 "rollback.count", "rollback.lastReason", "rollback.fromVersion", "rollback.toVersion",
                 "health.consecutiveFailures", "health.lastCheckTime", "health.message"]


@pytest.mark.parametrize("path", STATUS_FIELDS)
def test_status_schema_keeps_what_the_operator_writes(path):
    node = ROOT_SCHEMA["properties"]["status"]
    for key in path.split("."):
        node = node["properties"][key]
    assert node.get("description")


def test_fractional_status_figures_are_numbers():
    opt = ROOT_SCHEMA["properties"]["status"]["properties"]["optimization"]["properties"]
    for key in ("compressionRatio", "sparsity", "baselineAccuracy", "optimizedAccuracy", "accuracyDrop",
                "baselineLatencyMs", "optimizedLatencyMs"):
        assert opt[key]["type"] == "number", key


def test_conditions_have_the_metav1_shape():
    cond = ROOT_SCHEMA["properties"]["status"]["properties"]["conditions"]
    assert cond["x-kubernetes-list-type"] == "map" and cond["x-kubernetes-list-map-keys"] == ["type"]
    assert set(cond["items"]["properties"]) == {"type", "status", "reason", "message", "observedGeneration",
                                                "lastTransitionTime"}


def test_crd_file_is_one_valid_document():
    docs = list(yaml.safe_load_all((ROOT / crd.CRD_FILE).read_text()))
    assert len(docs) == 1 and docs[0]["metadata"]["name"] == "modeldeployments.modeldeploy.io"
