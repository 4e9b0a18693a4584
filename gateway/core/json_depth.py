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


def loads(raw: bytes | str) -> Any:
    """``raw`` parsed as orjson parses it; ``orjson.JSONDecodeError`` if it is not JSON or is
    nested deeper than ``MAX_DEPTH``."""
    value = orjson.loads(raw)
    # Each level takes two characters at least, so a short text needs no check.
    if len(raw) > 2 * MAX_DEPTH and isinstance(value, dict | list) and not _writable(value):
        raise orjson.JSONDecodeError(f"JSON nested deeper than {MAX_DEPTH} levels", "", 0)
    return value


def _writable(value: dict[str, Any] | list[Any]) -> bool:
    """Whether ``value`` can be written inside ``_ROOM`` more levels. orjson writing it is far
    cheaper than walking it in Python, and fails exactly when it is too deep (what orjson read
    has no other thing it cannot write)."""
    wrapped: Any = value
    for _ in range(_ROOM):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError:
        return False
    return True
