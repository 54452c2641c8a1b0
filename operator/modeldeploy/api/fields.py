"""The building blocks of the spec's one declaration: `field()`, `Rule` and the `api_object` dataclasses.

Every field of the spec is declared once, with `field(description, default, bounds, enum, pattern, ...)`; the
same `Meta` drives three things:
- the parser: pydantic validates the structure (nesting, aliases, defaults, frozen values), and the validators
  below check each value in the parse context, raising `Invalid(message, sub_path)`, which spec.parse() turns
  into a `SpecError` naming the full field path (the wording users knew from the hand-written parser);
- the CRD's openAPIV3Schema (schema.py: bounds, enums, defaults, CEL rules, descriptions);
- docs/api.md (rendered from that schema).

Cross-field constraints are `Rule`s on the class: the CEL rule the API server checks at admission and the same
constraint in Python, side by side (CEL cannot be generated from Python, so they are written together).

Checks run only when parse() validates (its context is set): constructing a spec value in code
(`dataclasses.replace`, tests) keeps the plain-dataclass behaviour of taking values as given.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, Callable, ClassVar

import pydantic
from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticUndefined

# Unknown fields are refused (the API server prunes or, with strict field validation, rejects them too); fields
# are filled by their camelCase JSON name from a body, or by attribute name from Python.
CONFIG = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)


class Invalid(ValueError):
    """A value the declaration refuses: `message` says what is wrong and how to fix it, `sub` is the path below
    the node that raised it (e.g. '.maxReplicas' from an object's rule, '[2]' from a list)."""

    def __init__(self, message: str, sub: str = ""):
        super().__init__(message)
        self.message = message
        self.sub = sub


@dataclasses.dataclass(frozen=True)
class Meta:
    """What a field declares beyond its Python type and default (see field())."""
    description: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    fmt: str | None = None
    max_length: int | None = None
    pattern: str | None = None        # checked in Python and emitted as a CEL matches() rule
    pattern_message: str = ""         # the CEL rule's message
    hint: str = ""                    # the parser's fix for a value that does not match
    empty_ok: bool = False            # "" is allowed (means: resolved from other fields)
    enum: tuple = ()
    enum_word: str = ""               # "unknown <enum_word> 'x': use one of ..."
    rules: tuple = ()                 # CEL rules on this node
    checks: tuple = ()                # the same constraints in Python: callables(value) raising Invalid
    default_object: bool = False      # the CRD defaults the object to {} so its fields' defaults apply
    context: str = ""                 # filled from parse()'s context (metadata), not part of the schema
    context_default: str = ""         # when absent, defaults to this entry of parse()'s context
    what: str = ""                    # how "is required: set <what>" names a list
    noun: str = ""                    # "must list at most N <noun>"
    min_items: int | None = None
    max_items: int | None = None
    list_type: str | None = None
    items: Meta | None = None         # a list's item node (description, bounds, enum)
    custom: Any = None                # k8s_types.Kind: a Kubernetes structure kept as a plain dict or tuple
    resolved: bool = False            # the default is resolved from other fields: none in the schema


def field(description: str, default: Any = PydanticUndefined, *, default_factory: Callable | None = None,
          alias: str | None = None, kw_only: bool | None = None, **meta: Any) -> Any:
    """A spec field: its description (kubectl explain, docs/api.md), default and constraints (see Meta)."""
    kwargs: dict[str, Any] = {"json_schema_extra": {"md": Meta(description, **meta)}}
    if default_factory is not None:
        kwargs["default_factory"] = default_factory
    else:
        kwargs["default"] = default
    if alias:
        kwargs["alias"] = alias
    if kw_only is not None:
        kwargs["kw_only"] = kw_only
    return Field(**kwargs)


@dataclasses.dataclass(frozen=True)
class Rule:
    """A cross-field constraint of an object: `cel` and `message` for the CRD (None: Python only), `check` for
    the parser (a callable(obj) raising Invalid; None: the API server's check suffices, e.g. defaults)."""
    cel: str | None
    message: str
    check: Callable[[Any], None] | None = None
    field_path: str = ""
    reason: str = "FieldValueInvalid"
    message_expression: str = ""
    priority: int = 0     # the parser checks lower first (the order the hand-written parser reported them in)


def meta_of(info: pydantic.fields.FieldInfo) -> Meta:
    return info.json_schema_extra["md"]


def is_object(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def leaf_type(annotation):
    """`X` for `X | None`; the declared type otherwise."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1
    return args[0] if optional else annotation


def item_type(annotation):
    """The item type of `tuple[X, ...]`, else None."""
    if typing.get_origin(annotation) is tuple:
        return typing.get_args(annotation)[0]
    return None


def _got(value) -> str:
    return f"got {type(value).__name__} {value!r}"


KIND_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def what_of(tp, meta: Meta) -> str:
    if meta.what:
        return meta.what
    if meta.custom is not None:
        return meta.custom.what
    if is_object(leaf_type(tp)):
        return "an object"
    return KIND_WORDS.get(leaf_type(tp), "a value")


def check_scalar(tp, meta: Meta, value):
    """Type, bounds, length, pattern, enum and the field's own checks, in the hand-written parser's order."""
    if tp is bool:
        if not isinstance(value, bool):
            raise Invalid(f"must be true or false, {_got(value)}")
    elif tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"must be an integer, {_got(value)}")
        if meta.minimum is not None and value < meta.minimum:
            raise Invalid(f"must be >= {meta.minimum}, got {value}")
        if meta.maximum is not None and value > meta.maximum:
            raise Invalid(f"must be <= {meta.maximum}, got {value}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(f"must be a number, {_got(value)}")
        value = float(value)
        if math.isnan(value):
            raise Invalid("must be a number, got NaN")
        lo, hi = meta.minimum, meta.maximum
        low_bad = lo is not None and (value <= lo if meta.exclusive_minimum else value < lo)
        high_bad = hi is not None and (value >= hi if meta.exclusive_maximum else value > hi)
        if low_bad or high_bad:
            span = (f"strictly between {float(lo)} and {float(hi)}" if meta.exclusive_minimum else
                    f"between {float(lo)} and {float(hi)}" if lo is not None and hi is not None else
                    f">= {float(lo)}" if lo is not None else f"<= {float(hi)}")
            raise Invalid(f"must be {span}, got {value:g}")
    elif tp is str:
        if not isinstance(value, str):
            raise Invalid(f"must be a string, {_got(value)}")
        if value == "" and meta.empty_ok:
            return value
        if meta.max_length is not None and len(value) > meta.max_length:
            raise Invalid(f"must be at most {meta.max_length} characters, got {len(value)}")
        if meta.pattern is not None and not re.fullmatch(meta.pattern, value):
            raise Invalid(f"{value!r} is not valid: {meta.hint}")
        if meta.enum and value not in meta.enum:
            raise Invalid(f"unknown {meta.enum_word} {value!r}: use one of {', '.join(meta.enum)}")
    for check in meta.checks:
        check(value)
    return value


def check_list(tp, meta: Meta, value):
    """A list of values or of objects: its type, length, distinctness, and (for values) each item."""
    item = item_type(tp)
    if not isinstance(value, list | tuple):
        raise Invalid(f"must be {what_of(tp, meta)}, {_got(value)}")
    if meta.list_type == "set":
        if not (meta.min_items or 0) <= len(value) <= meta.max_items or len(set(map(repr, value))) != len(value):
            raise Invalid(f"must list {meta.min_items} to {meta.max_items} different values")
    elif meta.max_items is not None and len(value) > meta.max_items:
        raise Invalid(f"must list at most {meta.max_items} {meta.noun}, got {len(value)}")
    if is_object(item):
        names = ", ".join(f.alias for f in item.__pydantic_fields__.values())
        for i, v in enumerate(value):
            if not isinstance(v, dict):
                raise Invalid(f"must be an object {{{names}}}", f"[{i}]")
        return list(value)
    out = []
    for i, v in enumerate(value):
        im = meta.items
        if item is float and (isinstance(v, bool) or not isinstance(v, (int, float)) or
                              not im.minimum <= v < im.maximum):
            raise Invalid(f"must be a number in [{im.minimum}, {im.maximum}), got {v!r}", f"[{i}]")
        if item is str and v not in im.enum:
            raise Invalid(f"unknown {im.enum_word} {v!r}: use one of {', '.join(im.enum)}", f"[{i}]")
        out.append(item(v))
    return tuple(out)


@pydantic.dataclasses.dataclass(frozen=True, config=CONFIG)
class ApiObject:
    """Base of the spec's objects: the parse-time checks every field and object gets from its declaration."""
    RULES: ClassVar[tuple] = ()

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, data: Any, info: ValidationInfo) -> Any:
        """Unknown keys, null as absent, context defaults and the CRD's {} defaults."""
        if not info.context or not isinstance(data, dict):
            return data
        fields = {f.alias: (name, f, meta_of(f)) for name, f in cls.__pydantic_fields__.items()}
        known = sorted(a for a, (_, _, m) in fields.items() if not m.context)
        for key in data:
            if key not in known:
                raise Invalid(f"unknown field; known fields: {', '.join(known)}", f".{key}")
        data = {k: v for k, v in data.items() if v is not None}
        for alias, (name, f, meta) in fields.items():
            if meta.context:
                data[alias] = info.context[meta.context]
            elif alias not in data and meta.context_default:
                data[alias] = info.context[meta.context_default]
            elif alias not in data and meta.default_object:
                data[alias] = {}
        # A required field left out is pydantic's 'missing' error, which spec.parse() words (in field order).
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _check_field(cls, value: Any, info: ValidationInfo) -> Any:
        if not info.context:
            return value
        f = cls.__pydantic_fields__[info.field_name]
        meta, tp = meta_of(f), leaf_type(f.annotation)
        if meta.custom is not None:
            return meta.custom.check(value)
        if is_object(tp):
            if not isinstance(value, dict):
                raise Invalid(f"must be an object, {_got(value)}")
            return value
        if item_type(tp) is not None:
            return check_list(tp, meta, value)
        return check_scalar(tp, meta, value)

    @model_validator(mode="after")
    def _check_rules(self, info: ValidationInfo):
        if info.context:
            for r in sorted(self.RULES, key=lambda r: r.priority):
                if r.check is not None:
                    r.check(self)
            self.resolve(info.context)
        return self

    def resolve(self, context: dict) -> None:
        """Defaults that depend on other fields or on the context (after the rules passed)."""

    def _set(self, name: str, value: Any) -> None:
        # Frozen dataclasses set their own fields this way in __post_init__; used by resolve() only.
        object.__setattr__(self, name, value)


def api_object(cls):
    """Declare a spec object: a frozen pydantic dataclass with camelCase JSON names (see CONFIG)."""
    return pydantic.dataclasses.dataclass(frozen=True, config=CONFIG)(cls)
