"""Server-sent events: reading a provider's event stream, writing the client's.

Reading follows the WHATWG event-stream rules that matter for LLM providers: ``event:`` and
``data:`` fields, multi-line data joined with newlines, comments (``:``) ignored, an event
dispatched at a blank line, a byte-order mark at the start ignored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from gateway.core.errors import FailureKind, UpstreamFailure
from gateway.upstream.http_response import HttpError, HttpTimeout

MAX_EVENT_BYTES = 16 << 20
"""Far beyond any event a provider sends (an inline image included); past it, an event that
never ends is a bad response, not a buffer that grows until the process runs out of memory."""


_BOM = b"\xef\xbb\xbf"
"""UTF-8's byte-order mark: the event-stream rules ignore one at the start of the stream."""


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
    keeps the cost per event low. A read that breaks is an ``UpstreamFailure`` (``CONNECT``)
    raised here rather than by a wrapping generator: each layer of async generators costs a
    resumption per event.
    """
    parser = EventParser()
    while True:
        try:
            data = await content.readany(chunk_timeout_s)
        except HttpError as exc:
            raise read_failure(exc, chunk_timeout_s) from exc
        if not data:
            for event in parser.end():
                yield event
            return
        for event in parser.read(data):
            yield event


def read_failure(error: HttpError, chunk_timeout_s: float) -> UpstreamFailure:
    """What a broken read of an event stream is to failover: a timeout or a cut connection."""
    if isinstance(error, HttpTimeout):
        return UpstreamFailure(FailureKind.TIMEOUT, f"no stream data for {chunk_timeout_s} s")
    return UpstreamFailure(FailureKind.CONNECT, f"stream broke: {error}")


class EventParser:
    """The event-stream field rules: bytes as they arrive in, whole events out."""

    __slots__ = ("data", "event", "fresh", "pending", "size")

    def __init__(self) -> None:
        self.fresh = True
        """Nothing read yet: a byte-order mark there is not part of the stream."""
        self.event = ""
        self.data: list[bytes] = []
        self.pending = b""
        self.size = 0
        """The bytes of the event's data lines so far."""

    @property
    def idle(self) -> bool:
        """True between events: no part of one is held."""
        return not (self.pending or self.data or self.event)

    def read(self, data: bytes) -> list[SseEvent]:
        """The events that ``data`` completes."""
        if self.fresh:
            self.fresh = False
            data = data.removeprefix(_BOM)
        if self.pending or self.data or self.event or not data.endswith(b"\n\n") or b"\r" in data:
            return self._lines(self.pending + data)
        # What providers send: whole events of one ``data:`` line each. Splitting on the blank
        # lines costs one call per read instead of the field rules' three per event.
        events = []
        for block in data[:-2].split(b"\n\n"):
            if block.startswith(b"data: ") and b"\n" not in block:
                events.append(SseEvent("", block[6:]))
            else:
                events += self._lines(block + b"\n\n")
        return events

    def end(self) -> list[SseEvent]:
        """The last event, when the body ends without its blank line."""
        if self.pending:
            self.feed(self.pending)
            self.pending = b""
        last = self.flush()
        return [] if last is None else [last]

    def _lines(self, data: bytes) -> list[SseEvent]:
        lines = data.split(b"\n")
        self.pending = lines.pop()
        if len(self.pending) > MAX_EVENT_BYTES:
            raise _too_large()
        return [e for line in lines if (e := self.feed(line)) is not None]

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
            self.size += len(value)
            if self.size > MAX_EVENT_BYTES:
                raise _too_large()
        elif field == b"event":
            self.event = value.decode("utf-8", "replace")
        return None

    def flush(self) -> SseEvent | None:
        if not self.data and not self.event:
            return None
        event = SseEvent(self.event, b"\n".join(self.data))
        self.event, self.data, self.size = "", [], 0
        return event


def _too_large() -> UpstreamFailure:
    return UpstreamFailure(FailureKind.BAD_RESPONSE,
                           f"stream event larger than {MAX_EVENT_BYTES} bytes")


def encode_data(payload: bytes) -> bytes:
    """One ``data:`` event for the client."""
    return b"data: " + payload + b"\n\n"


DONE = b"data: [DONE]\n\n"
