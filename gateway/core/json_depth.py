"""JSON read from outside (clients' bodies, providers' answers, tool-call arguments) that the
gateway can always write again.

orjson reads up to 1024 levels of nesting but writes at most 254: a body 300 levels deep was
read, then failed with a ``TypeError`` wherever it was written (sent upstream, stored, relayed),
a 500. ``loads`` refuses what is nested deeper than ``MAX_DEPTH`` as the decode error callers
already handle, leaving room for the levels a translation adds around what it read. Pure: it
touches nothing.
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_DEPTH = 128
_WRITABLE_DEPTH = 254  # orjson's own limit when writing
_ROOM = _WRITABLE_DEPTH - MAX_DEPTH
_WALK_BELOW = 16 * 1024
"""Bytes: below it walking the value in Python is cheaper than writing it once more (the
wrapping alone costs a few microseconds); above it, writing is."""


def loads(raw: bytes | str) -> Any:
    """``raw`` parsed as orjson parses it; ``orjson.JSONDecodeError`` if it is not JSON or is
    nested deeper than ``MAX_DEPTH``."""
    value = orjson.loads(raw)
    # Each level takes two characters at least, so a short text needs no check.
    if len(raw) > 2 * MAX_DEPTH and isinstance(value, dict | list):
        deep = (_brackets(raw) > MAX_DEPTH and _walk_deeper(value) if len(raw) < _WALK_BELOW
                else not _writable(value))
        if deep:
            raise orjson.JSONDecodeError(f"JSON nested deeper than {MAX_DEPTH} levels", "", 0)
    return value


def _brackets(raw: bytes | str) -> int:
    """How many ``[`` and ``{`` ``raw`` holds, at least its depth: counted in C, far cheaper
    than the walk, which most texts (an answer: a dozen) then need not take."""
    if isinstance(raw, str):
        return raw.count("[") + raw.count("{")
    return raw.count(b"[") + raw.count(b"{")


def _walk_deeper(value: dict[str, Any] | list[Any]) -> bool:
    """Whether ``value`` is nested deeper than ``MAX_DEPTH``, level by level."""
    level: list[Any] = [value]
    for _ in range(MAX_DEPTH):
        inner: list[Any] = []
        for container in level:
            items = container.values() if isinstance(container, dict) else container
            inner += [v for v in items if isinstance(v, dict | list)]
        if not inner:
            return False
        level = inner
    return True


def _writable(value: dict[str, Any] | list[Any]) -> bool:
    """Whether ``value`` can be written inside ``_ROOM`` more levels. orjson writing it is far
    cheaper than walking a large value in Python, and fails exactly when it is too deep (what
    orjson read has no other thing it cannot write)."""
    wrapped: Any = value
    for _ in range(_ROOM):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError:
        return False
    return True
