"""The CRD's OpenAPI schema of `.spec`, generated from the pydantic declaration of the spec.

Kubernetes wants a structural schema: every node typed, no `$ref`, no `anyOf` for optional fields, no `title`,
CEL rules and `x-kubernetes-*` markers where they belong. pydantic's own JSON schema gives none of that, so the
nodes are built here from each field's type and `Meta` (fields.py), with the builders crd_status.py uses too
(openapi.py), in a fixed key order so the YAML is stable.
"""
from __future__ import annotations

from typing import Any

from pydantic_core import PydanticUndefined

from modeldeploy.api.fields import Meta, is_object, item_type, leaf_type, meta_of
from modeldeploy.api.openapi import array, boolean, integer, number, obj, rule, string


def _schema_default(f, meta: Meta) -> Any:
    """The default the API server applies: scalars only ("", {}, () and None mean absent), {} for the objects
    declared default_object, nothing where the default is resolved from other fields."""
    if meta.default_object:
        return {}
    if meta.resolved or f.default is PydanticUndefined or f.default in ("", None):
        return None
    return f.default if isinstance(f.default, (bool, int, float, str)) else None


def _rules(meta: Meta) -> list:
    rules = []
    if meta.pattern is not None:
        matches = f"self.matches('{meta.pattern}')"
        rules.append(rule(f"self == '' || {matches}" if meta.empty_ok else matches, meta.pattern_message))
    return rules + list(meta.rules)


def _scalar(tp, meta: Meta, default=None) -> dict:
    if tp is bool:
        return boolean(meta.description, default=default)
    if tp is int:
        s = integer(meta.description, default=default, minimum=meta.minimum, maximum=meta.maximum, fmt=meta.fmt)
        if meta.rules:
            s["x-kubernetes-validations"] = list(meta.rules)
        return s
    if tp is float:
        return number(meta.description, default=default, minimum=meta.minimum, maximum=meta.maximum,
                      exclusive_minimum=meta.exclusive_minimum, exclusive_maximum=meta.exclusive_maximum)
    if tp is str:
        return string(meta.description, default=default, enum=meta.enum, max_length=meta.max_length,
                      rules=_rules(meta), fmt=meta.fmt)
    raise TypeError(f"no schema for {tp!r}")


def object_schema(cls, description: str, *, default=None) -> dict:
    """The node of a declared object: its fields (by JSON name), required ones, default and CEL rules."""
    properties, required = {}, []
    for f in cls.__pydantic_fields__.values():
        meta = meta_of(f)
        if meta.context:            # from metadata, not part of spec
            continue
        properties[f.alias] = field_schema(f.annotation, meta, _schema_default(f, meta))
        if f.is_required():
            required.append(f.alias)
    rules = [rule(r.cel, r.message, message_expression=r.message_expression, field_path=r.field_path,
                  reason=r.reason) for r in cls.RULES if r.cel is not None]
    return obj(description, properties, required=required, default=default, rules=rules)


def field_schema(annotation, meta: Meta, default=None) -> dict:
    tp = leaf_type(annotation)
    if meta.custom is not None:
        return meta.custom.schema(meta.description)
    if is_object(tp):
        return object_schema(tp, meta.description, default=default)
    item = item_type(tp)
    if item is not None:
        node = (object_schema(item, meta.items.description) if is_object(item) else _scalar(item, meta.items))
        return array(meta.description, node, min_items=meta.min_items, max_items=meta.max_items,
                     list_type=meta.list_type)
    return _scalar(tp, meta, default)


def spec_schema() -> dict:
    """The OpenAPI schema of .spec."""
    from modeldeploy.api.spec import ModelDeploymentSpec
    return object_schema(ModelDeploymentSpec, ModelDeploymentSpec.DESCRIPTION)
