"""The CRD and docs/api.md are generated and committed as generated; the schema is structural; the parser and
the schema, both generated from the one declaration of the spec (operator/modeldeploy/api/), behave alike at
every bound, enum, default and required field (a test of the two generators, not of copies kept in sync).
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from modeldeploy.api import crd
from modeldeploy.api import limits as L
from modeldeploy.api import spec as S
from modeldeploy.api.fields import is_object, leaf_type

ROOT = Path(__file__).resolve().parents[2]
ROOT_SCHEMA = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
SPEC_SCHEMA = ROOT_SCHEMA["properties"]["spec"]


def test_committed_crd_and_api_doc_are_generated(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert crd.main(["--check"]) == 0, capsys.readouterr().err + " (run `python -m modeldeploy.api.crd`)"


def test_crd_file_is_one_valid_document():
    docs = list(yaml.safe_load_all((ROOT / crd.CRD_FILE).read_text()))
    assert len(docs) == 1 and docs[0]["metadata"]["name"] == "modeldeployments.modeldeploy.io"


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
        assert not {"$ref", "$defs", "title", "nullable", "allOf", "oneOf"} & set(node), path
        assert "anyOf" not in node or node.get("x-kubernetes-int-or-string"), path
    preserved = {p for p, n in nodes if n.get("x-kubernetes-preserve-unknown-fields")}
    assert preserved == PRESERVE_ALLOWED


def test_every_spec_field_has_a_description():
    # Map values ({}) are described by their map.
    assert [p for p, n in _walk(SPEC_SCHEMA, "spec") if not n.get("description") and not p.endswith("{}")] == []


# --- the generated parser and the generated schema agree -------------------------------------------------------

def _leaves(cls=S.ModelDeploymentSpec, schema=SPEC_SCHEMA, path="spec", attrs=()):
    """(JSON path, schema node, attribute path) of every scalar field of the declaration."""
    for name, f in cls.__pydantic_fields__.items():
        if f.alias not in schema["properties"]:
            continue
        node, tp = schema["properties"][f.alias], leaf_type(f.annotation)
        if is_object(tp):
            yield from _leaves(tp, node, f"{path}.{f.alias}", attrs + (name,))
        else:
            yield f"{path}.{f.alias}", node, attrs + (name,)


LEAVES = list(_leaves())
SEARCH = "spec.optimization.search"


def full_body(path: str = "") -> dict:
    """A body in which every object exists, so every leaf can be set alone (search replaces pruning and
    quantization, so a path under it gets a body with search instead)."""
    body = {"metadata": {"name": "m"}, "spec": {
        "model": {"uri": "s3://m/base", "version": 1, "name": "m", "storageSecret": "s"},
        "optimization": {"outputUri": "s3://m/opt", "pruning": {"sparsity": 0.5, "fineTuneEpochs": 1},
                         "quantization": {"mode": "qat"}, "dataset": {"uri": "s3://m/d.npz"},
                         "gates": {"maxAccuracyDrop": 0.1, "minCompression": 2.0}, "export": {"onnx": True}},
        "serving": {"batching": {}},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 1000},
        # The widest window, so every intervalSeconds stays below it; steps as long, so canary parses too.
        "monitoring": {"slo": {"maxP99LatencyMs": 250, "maxErrorRatio": 0.05, "windowSeconds": L.MAX_SLO_WINDOW}},
        "rollout": {"steps": [{"weight": 20, "durationSeconds": L.MAX_SLO_WINDOW},
                              {"weight": 60, "durationSeconds": L.MAX_SLO_WINDOW}]}}}
    if path.startswith(SEARCH):
        opt = body["spec"]["optimization"]
        del opt["pruning"], opt["quantization"]
        opt["search"] = {"sparsities": [0, 0.5], "modes": ["int8"], "timeBudgetSeconds": 600}
        opt["activeDeadlineSeconds"] = L.MAX_DEADLINE_SECONDS    # above every budget the bounds test sets
    return body


def _set(body: dict, path: str, value) -> dict:
    body = copy.deepcopy(body)
    *parents, last = path.split(".")
    node = body
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return body


def _attr(parsed, attrs):
    for name in attrs:
        parsed = getattr(parsed, name)
    return parsed


def _bounds_cases():
    for path, node, _ in LEAVES:
        step = 1 if node["type"] == "integer" else 0.001
        if "minimum" in node:
            lo = node["minimum"]
            yield path, (lo + step if node.get("exclusiveMinimum") else lo), True
            yield path, (lo if node.get("exclusiveMinimum") else lo - step), False
        if "maximum" in node:
            hi = node["maximum"]
            yield path, (hi - step if node.get("exclusiveMaximum") else hi), True
            yield path, (hi if node.get("exclusiveMaximum") else hi + step), False


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
    assert [p for p, n, _ in LEAVES if n["type"] in ("integer", "number") and "minimum" not in n] == []


ENUMS = [(p, v, a) for p, n, a in LEAVES for v in n.get("enum", [])]


@pytest.mark.parametrize("path, value, attrs", ENUMS, ids=[f"{p}={v}" for p, v, _ in ENUMS])
def test_enum_values_are_accepted_and_others_refused(path, value, attrs):
    assert _attr(S.parse(_set(full_body(path), path, value)), attrs) == value
    with pytest.raises(S.SpecError) as err:
        S.parse(_set(full_body(path), path, "no-such-value"))
    assert err.value.field == path


DEFAULTS = [(p, n, a) for p, n, a in LEAVES if "default" in n]


@pytest.mark.parametrize("path, node, attrs", DEFAULTS, ids=[p for p, _, _ in DEFAULTS])
def test_schema_defaults_are_the_parsers(path, node, attrs):
    *parents, last = path.split(".")
    body = full_body(path)
    holder = body
    for key in parents:
        holder = holder[key]
    holder.pop(last, None)
    assert _attr(S.parse(body), attrs) == node["default"]


REQUIRED = [f"{p}.{r}" for p, n in _walk(SPEC_SCHEMA, "spec") if "[" not in p for r in n.get("required", [])]


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
    assert err.value.field == path and "is required" in err.value.message


def test_defaulted_objects_parse_like_their_default():
    body = {"metadata": {"name": "m"}, "spec": {"model": {"uri": "s3://m/base"}}}
    for name in ("serving", "monitoring", "rollout"):
        assert SPEC_SCHEMA["properties"][name]["default"] == {}
        assert S.parse(body) == S.parse(_set(body, f"spec.{name}", {}))


# --- status and the CRD's other parts ----------------------------------------------------------------------------

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


def test_a_new_object_reads_in_progress_until_the_operator_handles_it():
    """The API server fills in the status default on every read of an object the operator never wrote to: kstatus
    (Flux) and the Argo CD health check must read it as in progress, not as done."""
    from tests.argo_health import health_problems
    from tests.kstatus import IN_PROGRESS, kstatus_status
    new = {"kind": "ModelDeployment", "metadata": {"name": "digits", "generation": 1},
           "status": copy.deepcopy(ROOT_SCHEMA["properties"]["status"]["default"])}
    assert kstatus_status(new)[0] == IN_PROGRESS
    assert health_problems(new) == ("Progressing", [])
