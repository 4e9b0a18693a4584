"""Tests for gateway/routing/jsonschema_lite.py: the subset of JSON Schema escalation checks."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.routing.jsonschema_lite import validate

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
        "email": {"type": ["string", "null"]},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_a_conforming_value_passes() -> None:
    assert validate({"name": "Ada", "age": 36, "tags": ["a"], "email": None}, PERSON) is None
    assert validate({"name": "Ada", "age": 36.0}, PERSON) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], r"\$: expected object, got array"),
        ({"name": "Ada"}, r"\$: missing required property 'age'"),
        ({"name": "Ada", "age": True}, r"\$\.age: expected integer, got boolean"),
        ({"name": "Ada", "age": 1.5}, r"\$\.age: expected integer, got number"),
        ({"name": "Ada", "age": 1, "tags": ["c"]}, r"\$\.tags\[0\]: expected one of"),
        ({"name": "Ada", "age": 1, "extra": 1}, r"property 'extra' is not allowed"),
        ({"name": "Ada", "age": 1, "email": 3}, r"\$\.email: expected string or null"),
    ],
)
def test_a_broken_value_says_where_and_why(value: Any, message: str) -> None:
    problem = validate(value, PERSON)
    assert problem is not None
    import re

    assert re.search(message, problem), problem


def test_additional_properties_may_be_a_schema() -> None:
    schema = {"type": "object", "additionalProperties": {"type": "number"}}
    assert validate({"x": 1, "y": 2.5}, schema) is None
    assert validate({"x": "1"}, schema) == "$.x: expected number, got string"


def test_combinators_and_const() -> None:
    assert validate(3, {"anyOf": [{"type": "string"}, {"type": "integer"}]}) is None
    assert validate([], {"anyOf": [{"type": "string"}, {"type": "integer"}]}) is not None
    assert validate(3, {"oneOf": [{"type": "number"}, {"type": "integer"}]}) is not None
    assert validate(1, {"const": 1}) is None and validate(True, {"const": 1}) is not None


def test_unknown_keywords_are_ignored_not_enforced() -> None:
    schema = {"type": "string", "minLength": 99, "pattern": "^x$", "$ref": "#/defs/a"}
    assert validate("short", schema) is None
    assert validate("x", {"type": "exotic"}) is None
