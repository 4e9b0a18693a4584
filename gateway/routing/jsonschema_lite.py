"""A small JSON Schema validator: the subset that structured outputs and tool parameters use.

Supported keywords: ``type`` (a name or a list of names), ``enum``, ``const``, ``properties``,
``required``, ``additionalProperties`` (``false`` or a schema), ``items`` (one schema), and
``anyOf`` / ``oneOf`` / ``allOf`` (as "any of" / "exactly one of" / "all of"). Every other keyword
(``$ref``, formats, lengths, patterns, bounds) is ignored, so a value is only ever refused for a
reason this module understands: the escalation check must not reject a good answer because the
schema uses a feature we do not implement. ``validate`` returns the first problem as a message
with its JSON path (``$.items[2].name: expected string``), or None. Pure; touches nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Schema = Mapping[str, Any]
_MAX_DEPTH = 64

_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
}


def validate(instance: Any, schema: Any, path: str = "$") -> str | None:
    """The first way ``instance`` breaks ``schema``, or None when it conforms."""
    return _check(instance, schema, path, 0)


def _check(value: Any, schema: Any, path: str, depth: int) -> str | None:
    if schema is False:
        return f"{path}: no value is allowed here"
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return None
    for check in (_type, _enum, _combinators, _object, _array):
        problem = check(value, schema, path, depth)
        if problem is not None:
            return problem
    return None


def _type(value: Any, schema: Schema, path: str, depth: int) -> str | None:
    wanted = schema.get("type")
    if wanted is None:
        return None
    names = [wanted] if isinstance(wanted, str) else wanted if isinstance(wanted, list) else []
    known = [n for n in names if n in _TYPES]
    if not known or any(_TYPES[n](value) for n in known):
        return None
    return f"{path}: expected {' or '.join(known)}, got {_kind(value)}"


def _enum(value: Any, schema: Schema, path: str, depth: int) -> str | None:
    if "const" in schema and not _same(value, schema["const"]):
        return f"{path}: expected {schema['const']!r}"
    options = schema.get("enum")
    if isinstance(options, list) and not any(_same(value, o) for o in options):
        return f"{path}: expected one of {options!r}"
    return None


def _combinators(value: Any, schema: Schema, path: str, depth: int) -> str | None:
    for name in ("anyOf", "oneOf", "allOf"):
        options = schema.get(name)
        if not isinstance(options, list) or not options:
            continue
        problems = [_check(value, s, path, depth + 1) for s in options]
        passed = sum(p is None for p in problems)
        if name == "allOf" and passed < len(options):
            return next(p for p in problems if p is not None)
        if name == "anyOf" and not passed:
            return f"{path}: matches none of anyOf ({problems[0]})"
        if name == "oneOf" and passed != 1:
            return f"{path}: matches {passed} of oneOf, expected exactly 1"
    return None


def _object(value: Any, schema: Schema, path: str, depth: int) -> str | None:
    if not isinstance(value, dict):
        return None
    for key in schema.get("required") or ():
        if isinstance(key, str) and key not in value:
            return f"{path}: missing required property {key!r}"
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        where = f"{path}.{key}"
        if key in properties:
            problem = _check(item, properties[key], where, depth + 1)
        elif extra is False:
            problem = f"{path}: property {key!r} is not allowed"
        else:
            problem = _check(item, extra, where, depth + 1)
        if problem is not None:
            return problem
    return None


def _array(value: Any, schema: Schema, path: str, depth: int) -> str | None:
    items = schema.get("items")
    if not isinstance(value, list) or not isinstance(items, Mapping):
        return None
    for i, item in enumerate(value):
        problem = _check(item, items, f"{path}[{i}]", depth + 1)
        if problem is not None:
            return problem
    return None


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``1 == 1.0`` but ``True != 1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _kind(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _TYPES[name](value):
            return name
    return type(value).__name__
