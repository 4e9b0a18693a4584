"""Server-sent events: reading a provider's event stream, writing the client's.

Reading follows the WHATWG event-stream rules that matter for LLM providers: ``event:`` and
``data:`` fields, multi-line data joined with newlines, comments (``:``) ignored, an event
dispatched at a blank line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from gateway.core.errors import FailureKind, UpstreamFailure
from gateway.upstream.http_client import HttpTimeout


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: bytes


class Body(Protocol):
    async def readany(self, timeout_s: float | None = None) -> bytes:
        """The next bytes that arrived; ``b""`` at the end."""
        ...


async def iter_sse(content: Body, chunk_timeout_s: float) -> AsyncIterator[SseEvent]:
    """Events from an upstream body; each network read is awaited at most ``chunk_timeout_s``.

    Reading whatever has arrived and splitting it here (rather than awaiting line by line)
    keeps the cost per event low: one timer per network read, not one per line.
    """
    parser = _Parser()
    pending = b""
    while True:
        try:
            data = await content.readany(chunk_timeout_s)
        except HttpTimeout as exc:
            raise UpstreamFailure(
                FailureKind.TIMEOUT, f"no stream data for {chunk_timeout_s} s"
            ) from exc
        if not data:
            if pending:
                parser.feed(pending)
            if (last := parser.flush()) is not None:
                yield last
            return
        lines = (pending + data).split(b"\n")
        pending = lines.pop()
        for line in lines:
            if (event := parser.feed(line)) is not None:
                yield event


class _Parser:
    """The event-stream field rules, one line at a time."""

    __slots__ = ("data", "event")

    def __init__(self) -> None:
        self.event = ""
        self.data: list[bytes] = []

    def feed(self, line: bytes) -> SseEvent | None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            return self.flush()
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            self.data.append(value)
        elif field == b"event":
            self.event = value.decode("utf-8", "replace")
        return None

    def flush(self) -> SseEvent | None:
        if not self.data and not self.event:
            return None
        event = SseEvent(self.event, b"\n".join(self.data))
        self.event, self.data = "", []
        return event


def encode_data(payload: bytes) -> bytes:
    """One ``data:`` event for the client."""
    return b"data: " + payload + b"\n\n"


DONE = b"data: [DONE]\n\n"
