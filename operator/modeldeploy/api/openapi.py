"""Builders of OpenAPI v3 schema nodes for the CRD, each taking the description first so none is forgotten.

The key order of every node is fixed here, so the generated YAML is stable; the spec's nodes are built from the
pydantic declaration (schema.py), the status's directly (crd_status.py).
"""
from __future__ import annotations


def obj(description: str, properties: dict, *, required=(), default=None, rules=()) -> dict:
    s = {"type": "object", "description": description, "properties": properties}
    if required:
        s["required"] = list(required)
    if default is not None:
        s["default"] = default
    if rules:
        s["x-kubernetes-validations"] = list(rules)
    return s


def integer(description: str, *, default=None, minimum=None, maximum=None, fmt=None) -> dict:
    s = {"type": "integer", "description": description}
    if fmt:
        s["format"] = fmt
    if default is not None:
        s["default"] = default
    if minimum is not None:
        s["minimum"] = minimum
    if maximum is not None:
        s["maximum"] = maximum
    return s


def number(description: str, *, default=None, minimum=None, maximum=None, exclusive_minimum=False,
           exclusive_maximum=False) -> dict:
    s = {"type": "number", "description": description}
    if default is not None:
        s["default"] = default
    if minimum is not None:
        s["minimum"] = minimum
        if exclusive_minimum:
            s["exclusiveMinimum"] = True
    if maximum is not None:
        s["maximum"] = maximum
        if exclusive_maximum:
            s["exclusiveMaximum"] = True
    return s


def string(description: str, *, default=None, enum=None, max_length=None, rules=(), fmt=None) -> dict:
    s = {"type": "string", "description": description}
    if fmt:
        s["format"] = fmt
    if default is not None:
        s["default"] = default
    if enum:
        s["enum"] = list(enum)
    if max_length is not None:
        s["maxLength"] = max_length
    if rules:
        s["x-kubernetes-validations"] = list(rules)
    return s


def boolean(description: str, *, default=None) -> dict:
    s = {"type": "boolean", "description": description}
    if default is not None:
        s["default"] = default
    return s


def array(description: str, items: dict, *, min_items=None, max_items=None, list_type=None) -> dict:
    s = {"type": "array"}
    if min_items is not None:
        s["minItems"] = min_items
    if max_items is not None:
        s["maxItems"] = max_items
    if list_type:
        s["x-kubernetes-list-type"] = list_type
    s["description"] = description
    s["items"] = items
    return s


def raw_object(description: str) -> dict:
    """A Kubernetes or framework structure used as it is: the one place unknown fields are preserved."""
    return {"type": "object", "description": description, "x-kubernetes-preserve-unknown-fields": True}


def rule(rule_: str, message: str, *, message_expression: str = "", field_path: str = "",
         reason: str = "FieldValueInvalid") -> dict:
    """An x-kubernetes-validations entry (a CEL rule the API server checks at admission)."""
    r = {"rule": rule_}
    if message:
        r["message"] = message
    if message_expression:
        r["messageExpression"] = message_expression
    if field_path:
        r["fieldPath"] = field_path
    r["reason"] = reason
    return r
