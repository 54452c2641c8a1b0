"""Kubernetes structures in the spec, each declared once: its CRD schema and its parse-time check side by side.

nodeSelector, tolerations, resources, affinity and the HPA metrics are kept as the plain dicts (tuples of
dicts) the user wrote, because they are copied into child manifests as they are; storage URIs are strings with
three CEL rules. A `Kind` gives the schema node (`schema(description)`) and the check (`check(value)`, raising
fields.Invalid with the path below the field).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

from modeldeploy.api import limits as L
from modeldeploy.api import quantity
from modeldeploy.api.fields import Invalid, field
from modeldeploy.api.openapi import integer, obj, raw_object, rule, string

MAX_LIST = 64  # list bounds keep CEL's cost estimate within the API server's budget


@dataclasses.dataclass(frozen=True)
class Kind:
    what: str                                  # "is required: set <what>" / "must be <what>"
    schema: Callable[[str], dict]
    check: Callable[[Any], Any]


def _typed(value, kind: type, what: str):
    if not isinstance(value, kind):
        raise Invalid(f"must be {what}, got {type(value).__name__} {value!r}")
    return value


# --- storage URIs ---------------------------------------------------------------------------------------------

def _check_uri(value: str) -> None:
    if "/../" in value or value.endswith("/.."):
        raise Invalid(f"{value!r} must not contain '..' path segments")
    if re.fullmatch(L.FORBIDDEN_FILE_PATTERN, value):
        raise Invalid(f"{value!r} is a system path (/proc, /sys, /dev, /run, /etc): use a storage URI or a "
                      "file:/// path to a model volume")


def uri(description: str, path: str, **kwargs) -> Any:
    """A storage URI field: scheme, '..' segments and system paths, checked by CEL and by the parser."""
    return field(description, max_length=L.MAX_URI_LENGTH, pattern=L.URI_PATTERN, pattern_message=(
        f"{path} must be a URI with scheme s3://, gs://, pvc:// or file:/// (for example s3://models/digits/base "
        f"or file:///models/digits)"), hint="use a URI with scheme s3://, gs://, pvc:// or file:/// (e.g. "
                                            "s3://bucket/models/digits)",
        rules=(rule("!self.contains('/../') && !self.endsWith('/..')", f"{path} must not contain '..' path segments"),
               rule(f"!self.matches('{L.FORBIDDEN_FILE_PATTERN}')",
                    f"{path} is a system path (/proc, /sys, /dev, /run, /etc): use a storage URI or a file:/// path "
                    f"to a model volume")),
        checks=(_check_uri,), **kwargs)


# --- node selectors -------------------------------------------------------------------------------------------

def label_map(path: str) -> Kind:
    """A node selector: label keys and values as the API server checks them on a pod."""
    def schema(description: str) -> dict:
        return {"type": "object", "description": description, "maxProperties": MAX_LIST,
                "additionalProperties": {"type": "string", "maxLength": 63},
                "x-kubernetes-validations": [
                    rule(f"self.all(k, size(k) <= 317 && k.matches('{L.LABEL_KEY_PATTERN}'))",
                         f"{path} keys must be label keys: [prefix/]name, the name at most 63 letters, digits, "
                         f"'-', '_' or '.'"),
                    rule(f"self.all(k, self[k].matches('{L.LABEL_VALUE_PATTERN}'))",
                         f"{path} values must be label values: at most 63 letters, digits, '-', '_' or '.', "
                         f"starting and ending with a letter or digit")]}

    def check(value) -> dict:
        for k, v in _typed(value, dict, "a map of strings").items():
            if not isinstance(v, str):
                raise Invalid(f"must be a string, got {type(v).__name__} {v!r} (quote it in YAML)", f".{k}")
            if len(k) > 317 or not re.fullmatch(L.LABEL_KEY_PATTERN, k):
                raise Invalid(f"{k!r} is not a label key: [prefix/]name, the name at most 63 letters, digits, "
                              "'-', '_' or '.'")
            if not re.fullmatch(L.LABEL_VALUE_PATTERN, v):
                raise Invalid(f"{v!r} is not a label value: at most 63 letters, digits, '-', '_' or '.', starting "
                              "and ending with a letter or digit", f".{k}")
        return dict(value)
    return Kind("a map of strings", schema, check)


# --- resources ------------------------------------------------------------------------------------------------

def _quantity_map(description: str) -> dict:
    return {"type": "object", "description": description, "additionalProperties": {
        "anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True,
        "pattern": quantity.PATTERN}}


def _resources_schema(description: str) -> dict:
    return obj(description, {
        "limits": _quantity_map("Maximum amount of each resource (e.g. cpu: 2, memory: 4Gi)."),
        "requests": _quantity_map("Amount of each resource the scheduler reserves (e.g. cpu: 500m, memory: 1Gi)."),
    })


def _resources_check(value) -> dict:
    for section, quantities in _typed(value, dict, "an object with limits and requests").items():
        if section not in ("limits", "requests"):
            raise Invalid("unknown field; known fields: limits, requests", f".{section}")
        if not isinstance(quantities, dict):
            raise Invalid("must be a map of resource name to quantity", f".{section}")
        for name, q in quantities.items():
            if isinstance(q, bool) or not isinstance(q, (int, float, str)) or \
                    not re.fullmatch(quantity.PATTERN, str(q)):
                raise Invalid(f"{q!r} is not a quantity (e.g. 500m, 2, 4Gi)", f".{section}.{name}")
    return dict(value)


RESOURCES = Kind("an object with limits and requests", _resources_schema, _resources_check)


# --- tolerations ----------------------------------------------------------------------------------------------

def _tolerations_schema(description: str) -> dict:
    return {"type": "array", "description": description, "maxItems": MAX_LIST, "items": obj(
        "A Kubernetes Toleration.", {
            "key": string("Taint key the toleration applies to; empty with operator Exists matches every taint.",
                          max_length=317, rules=[rule(f"self == '' || self.matches('{L.LABEL_KEY_PATTERN}')",
                                                      "a toleration key must be a taint key: [prefix/]name")]),
            "operator": string("Exists or Equal (default Equal).", enum=L.TOLERATION_OPERATORS),
            "value": string("Taint value to match when operator is Equal.", max_length=63,
                            rules=[rule(f"self.matches('{L.LABEL_VALUE_PATTERN}')",
                                        "a toleration value must be a label value: at most 63 letters, digits, "
                                        "'-', '_' or '.'")]),
            "effect": string("Taint effect to match; empty matches all effects.",
                             enum=("",) + L.TOLERATION_EFFECTS),
            "tolerationSeconds": integer("For NoExecute: how long the pod stays bound after the taint appears.",
                                         fmt="int64"),
        })}


def _optional(t: dict, key: str, kind: type, what: str, sub: str):
    value = t.get(key)
    if value is None:
        return None
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise Invalid(f"must be {what}, got {type(value).__name__} {value!r}", f"{sub}.{key}")
    return value


def _tolerations_check(value) -> tuple:
    out = []
    for i, t in enumerate(_typed(value, list, "a list of tolerations")):
        sub = f"[{i}]"
        if not isinstance(t, dict):
            raise Invalid("must be an object (key, operator, value, effect, tolerationSeconds)", sub)
        allowed = {"key", "operator", "value", "effect", "tolerationSeconds"}
        for k in t:
            if k not in allowed:
                raise Invalid(f"unknown field; known fields: {', '.join(sorted(allowed))}", f"{sub}.{k}")
        key = _optional(t, "key", str, "a string", sub)
        if key and not re.fullmatch(L.LABEL_KEY_PATTERN, key):
            raise Invalid(f"{key!r} is not a taint key: [prefix/]name, the name at most 63 letters, digits, '-', "
                          "'_' or '.'", f"{sub}.key")
        val = _optional(t, "value", str, "a string", sub)
        if val and not re.fullmatch(L.LABEL_VALUE_PATTERN, val):
            raise Invalid(f"{val!r} is not a taint value: at most 63 letters, digits, '-', '_' or '.'",
                          f"{sub}.value")
        op = _optional(t, "operator", str, "a string", sub)
        if op is not None and op not in L.TOLERATION_OPERATORS:
            raise Invalid(f"must be one of {', '.join(L.TOLERATION_OPERATORS)}, got {op!r}", f"{sub}.operator")
        eff = _optional(t, "effect", str, "a string", sub)
        if eff not in (None, "") and eff not in L.TOLERATION_EFFECTS:
            raise Invalid(f"must be one of {', '.join(L.TOLERATION_EFFECTS)}, got {eff!r}", f"{sub}.effect")
        _optional(t, "tolerationSeconds", int, "an integer", sub)
        out.append(dict(t))
    return tuple(out)


TOLERATIONS = Kind("a list of tolerations", _tolerations_schema, _tolerations_check)


# --- pass-through objects -------------------------------------------------------------------------------------

def _depth(value, limit: int) -> int:
    """Nesting depth of a JSON value, counted no further than `limit` + 1 (no recursion, so no stack limit)."""
    stack, deepest = [(value, 1)], 0
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            break
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else ()
        stack.extend((c, d + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def passthrough(what: str) -> Kind:
    """An object used as it is (a Kubernetes Affinity): any keys, bounded nesting."""
    def check(value) -> dict:
        if _depth(_typed(value, dict, what), L.MAX_NESTING) > L.MAX_NESTING:
            raise Invalid(f"is nested deeper than {L.MAX_NESTING} levels: not {what}")
        return value
    return Kind(what, raw_object, check)


# --- HPA metrics ----------------------------------------------------------------------------------------------

METRIC_SOURCES = ("resource", "pods", "object", "external", "containerResource")


def _metrics_schema(description: str) -> dict:
    sources = {key: raw_object(f"The autoscaling/v2 {key} metric source (for type {key[0].upper() + key[1:]}).")
               for key in METRIC_SOURCES}
    return {
        "type": "array", "maxItems": 10, "description": description,
        "items": obj("An autoscaling/v2 MetricSpec.", {
            "type": string("Metric source type; the matching field (resource, pods, object, external, "
                           "containerResource) must be set.", enum=L.METRIC_TYPES),
            **sources,
        }, required=["type"], rules=[rule(
            "(self.type == 'Resource' && has(self.resource)) || (self.type == 'Pods' && has(self.pods)) "
            "|| (self.type == 'Object' && has(self.object)) || (self.type == 'External' && "
            "has(self.external)) || (self.type == 'ContainerResource' && has(self.containerResource))",
            "spec.autoscaling.metrics: a metric needs the source field matching its type",
            message_expression="'spec.autoscaling.metrics: a metric of type ' + self.type + "
                               "' needs its matching source field (resource, pods, object, external "
                               "or containerResource)'", reason="FieldValueRequired")]),
    }


def _metrics_check(value) -> tuple:
    out = []
    for i, m in enumerate(_typed(value, list, "a list of autoscaling/v2 MetricSpec objects")):
        sub = f"[{i}]"
        if not isinstance(m, dict):
            raise Invalid("must be an autoscaling/v2 MetricSpec object", sub)
        mtype = m.get("type")
        if mtype is None:
            raise Invalid("is required: set a string", f"{sub}.type")
        if not isinstance(mtype, str):
            raise Invalid(f"must be a string, got {type(mtype).__name__} {mtype!r}", f"{sub}.type")
        if mtype not in L.METRIC_TYPES:
            raise Invalid(f"unknown metric type {mtype!r}: use one of {', '.join(L.METRIC_TYPES)}", f"{sub}.type")
        # autoscaling/v2 keys the source by the type name in lowerCamelCase (Resource -> resource, ...).
        source = mtype[0].lower() + mtype[1:]
        if not isinstance(m.get(source), dict):
            raise Invalid(f"a metric of type {mtype} needs a {source} object", f"{sub}.{source}")
        out.append(dict(m))
    return tuple(out)


METRICS = Kind("a list of autoscaling/v2 MetricSpec objects", _metrics_schema, _metrics_check)
