"""Server-sent events: reading a provider's event stream, writing the client's.

Reading follows the WHATWG event-stream rules that matter for LLM providers: ``event:`` and
``data:`` fields, multi-line data joined with newlines, comments (``:``) ignored, an event
dispatched at a blank line.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import StreamReader

from gateway.errors import FailureKind, UpstreamFailure


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: bytes


async def iter_sse(content: StreamReader, chunk_timeout_s: float) -> AsyncIterator[SseEvent]:
    """Events from an upstream body, each line awaited at most ``chunk_timeout_s``."""
    event = ""
    data: list[bytes] = []
    while True:
        try:
            async with asyncio.timeout(chunk_timeout_s):
                line = await content.readline()
        except TimeoutError as exc:
            raise UpstreamFailure(
                FailureKind.TIMEOUT, f"no stream data for {chunk_timeout_s} s"
            ) from exc
        if not line:
            if data:
                yield SseEvent(event, b"\n".join(data))
            return
        line = line.rstrip(b"\r\n")
        if not line:
            if data or event:
                yield SseEvent(event, b"\n".join(data))
            event, data = "", []
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            event = value.decode("utf-8", "replace")


def encode_data(payload: bytes) -> bytes:
    """One ``data:`` event for the client."""
    return b"data: " + payload + b"\n\n"


DONE = b"data: [DONE]\n\n"
