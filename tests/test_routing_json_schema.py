"""Tests for gateway/routing/json_schema.py: escalation's JSON Schema checks through ``jsonschema``.

The schemas are the shapes pydantic and the SDKs generate: nested models through ``$defs`` and
``$ref``, formats, lengths, patterns and bounds.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from gateway.routing import json_schema
from gateway.routing.json_schema import validate

# What pydantic v2 emits for `class Order(BaseModel): id: str = Field(pattern=...); items:
# list[Item] = Field(min_length=1); contact: Contact`, with Item and Contact as nested models.
ORDER: dict[str, Any] = {
    "$defs": {
        "Item": {
            "properties": {
                "sku": {"maxLength": 8, "minLength": 3, "title": "Sku", "type": "string"},
                "quantity": {"exclusiveMinimum": 0, "maximum": 100, "title": "Quantity",
                             "type": "integer"},
            },
            "required": ["sku", "quantity"],
            "title": "Item",
            "type": "object",
        },
        "Contact": {
            "properties": {
                "email": {"format": "email", "title": "Email", "type": "string"},
                "since": {"format": "date", "title": "Since", "type": "string"},
            },
            "required": ["email"],
            "title": "Contact",
            "type": "object",
            "additionalProperties": False,
        },
    },
    "properties": {
        "id": {"pattern": "^ORD-[0-9]{4}$", "title": "Id", "type": "string"},
        "items": {"items": {"$ref": "#/$defs/Item"}, "minItems": 1, "title": "Items",
                  "type": "array"},
        "contact": {"$ref": "#/$defs/Contact"},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
    },
    "required": ["id", "items", "contact"],
    "title": "Order",
    "type": "object",
}

GOOD_ORDER: dict[str, Any] = {
    "id": "ORD-0042",
    "items": [{"sku": "ABC12", "quantity": 3}],
    "contact": {"email": "ada@example.com", "since": "2024-02-29"},
    "note": None,
}


def _order(**changes: Any) -> dict[str, Any]:
    return {**GOOD_ORDER, **changes}


def test_a_conforming_pydantic_style_value_passes() -> None:
    assert validate(GOOD_ORDER, ORDER) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (_order(id="ORD-42"), r"^\$\.id: .*does not match"),
        (_order(items=[]), r"^\$\.items: .*should be non-empty"),
        (_order(items=[{"sku": "AB", "quantity": 1}]), r"^\$\.items\[0\]\.sku: .*too short"),
        (_order(items=[{"sku": "ABCDEFGHI", "quantity": 1}]), r"^\$\.items\[0\]\.sku: .*too long"),
        (_order(items=[{"sku": "ABC", "quantity": 0}]),
         r"^\$\.items\[0\]\.quantity: .*less than or equal to the minimum"),
        (_order(items=[{"sku": "ABC", "quantity": 101}]),
         r"^\$\.items\[0\]\.quantity: .*greater than the maximum"),
        (_order(items=[{"sku": "ABC"}]), r"^\$\.items\[0\]: 'quantity' is a required property"),
        (_order(contact={"email": "not an address"}), r"^\$\.contact\.email: .*is not a 'email'"),
        (_order(contact={"email": "a@b.c", "since": "2023-02-30"}),
         r"^\$\.contact\.since: .*is not a 'date'"),
        (_order(contact={"email": "a@b.c", "phone": "1"}),
         r"^\$\.contact: Additional properties are not allowed"),
        (_order(note=3), r"^\$\.note: 3 is not valid under any of the given schemas"),
        ([], r"^\$: \[\] is not of type 'object'"),
    ],
)
def test_a_broken_value_says_where_and_why(value: Any, message: str) -> None:
    problem = validate(value, ORDER)
    assert problem is not None
    assert re.search(message, problem), problem


def test_the_schema_draft_comes_from_its_own_dollar_schema() -> None:
    # Draft 4 spells an exclusive bound as a boolean beside "minimum"; 2020-12 would reject it.
    draft4 = {"$schema": "http://json-schema.org/draft-04/schema#",
              "type": "number", "minimum": 0, "exclusiveMinimum": True}
    assert validate(1, draft4) is None
    assert validate(0, draft4) is not None


def test_an_invalid_schema_passes_every_value_and_is_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": "zero"}}}
    with caplog.at_level(logging.INFO, logger=json_schema.__name__):
        assert validate({"n": -5}, schema) is None
        assert validate({"n": "x"}, schema) is None
    skipped = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1, [r.getMessage() for r in skipped]
    assert "properties/n/minimum" in skipped[0].getMessage() or "minimum" in skipped[0].getMessage()


def test_a_ref_outside_the_schema_passes_and_fetches_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    schema = {"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/missing.json"}}}
    with caplog.at_level(logging.INFO, logger=json_schema.__name__):
        assert validate({"a": 1}, schema) is None
        assert validate({"a": 2}, schema) is None
    assert sum("does not resolve" in r.getMessage() for r in caplog.records) == 1


def test_a_schema_is_compiled_once_however_its_keys_are_ordered() -> None:
    json_schema._compiled.cache_clear()
    first = {"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}}
    reordered = {"properties": {"a": {"type": "string"}}, "required": ["a"], "type": "object"}
    assert validate({"a": "x"}, first) is None
    assert validate({}, reordered) is not None
    info = json_schema._compiled.cache_info()
    assert (info.misses, info.hits) == (1, 1)


def test_boolean_schemas_accept_all_or_nothing() -> None:
    assert validate({"anything": 1}, True) is None
    assert validate(1, False) == "$: no value is allowed here"
