"""JSON from outside is refused past MAX_DEPTH levels (gateway/core/json_depth.py), so whatever
is read can be written again, translated, stored or relayed, with levels to spare."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.core.json_depth import MAX_DEPTH, loads


def nested(depth: int, leaf: Any = 1) -> Any:
    """``leaf`` inside ``depth`` levels of lists and objects, in turn."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


LONG = "x" * 20_000
"""A leaf that makes a text long enough to be checked by writing it rather than walking it."""


@pytest.mark.parametrize("leaf", [1, LONG], ids=["short", "long"])
@pytest.mark.parametrize("depth", [0, 1, 7, MAX_DEPTH])
def test_json_within_the_limit_reads_as_orjson_reads_it(depth: int, leaf: Any) -> None:
    raw = orjson.dumps(nested(depth, leaf))
    assert loads(raw) == orjson.loads(raw) == nested(depth, leaf)
    assert loads(raw.decode()) == nested(depth, leaf)


@pytest.mark.parametrize("leaf", ["1", f'"{LONG}"'], ids=["short", "long"])
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 255, 1000])
def test_json_past_the_limit_is_a_decode_error(depth: int, leaf: str) -> None:
    # Written by hand: orjson itself cannot write these.
    raw = "[" * depth + leaf + "]" * depth
    with pytest.raises(orjson.JSONDecodeError, match=f"deeper than {MAX_DEPTH}"):
        loads(raw)


def test_a_wide_value_within_the_limit_is_read() -> None:
    wide = [nested(MAX_DEPTH - 1), [1, 2, {"a": [3]}], {"b": nested(5)}]
    assert loads(orjson.dumps(wide)) == wide


def test_what_was_read_can_be_written_inside_more_levels() -> None:
    # A translation wraps what it read (a tool's schema inside a request, a result inside a
    # message); what passed the limit still writes inside a hundred more levels.
    value = loads(orjson.dumps(nested(MAX_DEPTH)))
    assert orjson.loads(orjson.dumps(nested(100, value))) == nested(100, value)


def test_non_json_is_still_a_decode_error() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        loads(b"{nope")
