"""An upstream event stream as OpenAI chunks: pulled with ``async for``, or pushed to a consumer.

Failover pulls the first chunks (it must see content before it commits to a deployment). The
relay then may ``push`` the rest: each piece of the body goes from the upstream connection's own
callback through the event parser and the provider's decoder to the consumer, so a relayed
chunk wakes no task and resumes no generator. Both ways see the same chunks in the same order
and end the same way: the end marker, a body that ends (a cut stream unless the decoder says it
was whole), or an ``UpstreamFailure`` after the chunks that came before it.

A pushed stream may also hand over a read with its bytes: when the provider finds a read plain
(``plain``: whole events of chunks the decoder would pass as they are, nothing to act on) and
the consumer takes reads (``push(consumer, events=…)``), the read's chunks go to it together
with the bytes they came in, which it may relay as they are instead of encoding each chunk.

Touches the one upstream response it reads, and releases it on ``aclose``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Protocol

from gateway.core.answer import Json
from gateway.upstream.http_response import HttpError, Response
from gateway.upstream.sse import EventParser, SseEvent, read_failure


class ChunkDecoder(Protocol):
    """A provider's events as chunks."""

    def event(self, event: SseEvent) -> list[Json] | None:
        """The chunks an event carries (None: the end marker); raises ``UpstreamFailure``."""
        ...

    def end(self) -> list[Json]:
        """The body ended with no end marker: the last chunks, or ``UpstreamFailure`` if that
        cut the answer."""
        ...


class ChunkConsumer(Protocol):
    """Where pushed chunks go; called from the upstream connection's callbacks."""

    def chunk(self, chunk: Json) -> None:
        """The next chunk; ``ChunkStream.more`` says whether others follow it at once."""
        ...

    def end(self, failure: Exception | None) -> None:
        """The stream is over: whole (None) or broken (an ``UpstreamFailure``, or what a
        decoder raised that it should not have); nothing follows."""
        ...


PlainTest = Callable[[bytes], list[Json] | None]
"""A provider's test of a read: its chunks when it is plain, else None (see ``ChunkStream``)."""
PlainEvents = Callable[[bytes, list[Json]], None]
"""Takes a plain read: its bytes and its chunks (see ``ChunkStream.push``)."""


class ChunkStream(AsyncGenerator[Json, None]):
    """One upstream call's chunks; the call is made at the first ``__anext__``.

    ``plain``, the provider's test of a read's bytes: the read's chunks when it is whole events
    that may be relayed as they came (none of them the end, an error, usage or a finish), the
    same chunks the decoder would give; else None, and the read is parsed."""

    __slots__ = ("_consumer", "_decoder", "_events", "_failure", "_open", "_over", "_parser",
                 "_plain", "_ready", "_response", "_timeout_s")

    def __init__(self, open_: Callable[[], Awaitable[Response]], decoder: ChunkDecoder,
                 chunk_timeout_s: float, *, plain: PlainTest | None = None) -> None:
        self._open: Callable[[], Awaitable[Response]] | None = open_
        self._decoder = decoder
        self._plain = plain
        self._events: PlainEvents | None = None
        self._timeout_s = chunk_timeout_s
        self._response: Response | None = None
        self._parser = EventParser()
        self._ready: deque[Json] = deque()
        self._failure: Exception | None = None
        self._over = False  # no more bytes will be decoded: end marker, end of body, failure
        self._consumer: ChunkConsumer | None = None

    # Pulled ------------------------------------------------------------------------------

    async def __anext__(self) -> Json:
        while not self._ready:
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            if self._over:
                self._release()
                raise StopAsyncIteration
            await self._read()
        return self._ready.popleft()

    async def _read(self) -> None:
        if self._response is None:
            if self._open is None:
                self._over = True  # closed before it was opened
                return
            open_, self._open = self._open, None
            self._response = await open_()
        try:
            data = await self._response.readany(self._timeout_s)
        except HttpError as exc:
            self.body_error(exc)
            return
        if data:
            self.body_data(data)
        else:
            self.body_end()

    async def asend(self, value: None) -> Json:
        return await self.__anext__()

    async def athrow(self, typ: Any, val: Any = None, tb: Any = None) -> Json:
        await self.aclose()
        raise typ if val is None else val

    async def aclose(self) -> None:
        """Stop: the upstream connection is released (closed unless read to its end)."""
        self._open = None
        self._over = True
        self._consumer = self._events = None
        self._ready.clear()
        self._release()

    def _release(self) -> None:
        if self._response is not None:
            self._response.release()

    # Pushed ------------------------------------------------------------------------------

    def push(self, consumer: ChunkConsumer, events: PlainEvents | None = None) -> None:
        """Hand every chunk still to come to ``consumer`` as it arrives, then its ``end``.

        Only once pulling has begun (failover has read the first chunks). Chunks already
        decoded go first, from this call. With ``events`` (and a provider's ``plain`` test),
        a read the provider finds plain goes to ``events``, its bytes with its chunks, instead
        of its chunks one by one to ``consumer.chunk``."""
        if self._response is None:
            raise RuntimeError("push before the stream was opened")
        self._consumer = consumer
        self._events = events if self._plain is not None else None
        self._deliver()
        if self._consumer is not None:
            self._response.push(self, self._timeout_s)

    def pause(self) -> None:
        """The consumer cannot take more yet: stop reading upstream until ``resume``."""
        if self._response is not None and self._consumer is not None:
            self._response.pause_push()

    def resume(self) -> None:
        if self._response is not None and self._consumer is not None:
            self._response.resume_push()

    @property
    def more(self) -> bool:
        """True while a pushed chunk is delivered with more decoded behind it (the same read):
        a consumer may hold its bytes and write them with the last one."""
        return bool(self._ready)

    def stop_push(self) -> None:
        """No more chunks to the consumer; what arrives later stays unread until ``aclose``."""
        self._consumer = self._events = None
        if self._response is not None:
            self._response.unpush()

    def _deliver(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        ready = self._ready
        while ready:
            consumer.chunk(ready.popleft())
            if self._consumer is not consumer:
                return
        if self._over:
            failure, self._failure = self._failure, None
            self._consumer = self._events = None
            if self._response is not None:
                self._response.unpush()
            consumer.end(failure)

    # The response's bytes (``BodySink``), pulled or pushed ----------------------------------

    def body_data(self, data: bytes) -> None:
        if self._over:
            return
        events, plain = self._events, self._plain
        if events is not None and plain is not None and self._parser.idle:
            chunks = plain(data)
            if chunks is not None:
                events(data, chunks)
                return
        try:
            self._over = self._decode(self._parser.read(data))
        except Exception as exc:  # raised where the pull would have raised it, after the chunks
            self._failure, self._over = exc, True  # before it (pushed: not in the loop's hands)
        self._deliver()

    def body_end(self) -> None:
        if self._over:
            return
        try:
            if not self._decode(self._parser.end()):
                self._ready.extend(self._decoder.end())
        except Exception as exc:
            self._failure = exc
        self._over = True
        self._deliver()

    def _decode(self, events: list[SseEvent]) -> bool:
        """Queue the chunks ``events`` carry; True at the end marker (nothing after it counts)."""
        decoder, ready = self._decoder, self._ready
        for event in events:
            chunks = decoder.event(event)
            if chunks is None:
                return True
            ready.extend(chunks)
        return False

    def body_error(self, error: HttpError) -> None:
        if self._over:
            return
        self._failure, self._over = read_failure(error, self._timeout_s), True
        self._deliver()
