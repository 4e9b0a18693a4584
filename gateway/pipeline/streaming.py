"""Writing answers to the client as server-sent events: relayed from upstream, or replayed.

A relayed stream passes each chunk on as it arrives; a usage chunk goes to the client only when
it asked for one (``stream_options.include_usage``). If the upstream breaks after the first byte,
the client gets OpenAI's in-stream error event and no ``[DONE]``: never a clean end that looks
like a complete answer. A stream still running at the shutdown deadline (``Lifecycle.drain``)
ends the same way.

Chunks are always OpenAI ``chat.completion.chunk`` objects inside the gateway; a ``ChunkWriter``
turns them into the client's dialect on the way out (``OpenAIChunks`` here; the Messages and
Responses writers live beside their handlers in ``gateway.api``). One exception, for speed: a
read of an OpenAI upstream that holds only plain chunks (``ChunkStream.push``'s reads) goes to a
chat completions client as the bytes it came in, one write for the read, its chunks still kept
for the cache and their text for the token estimate. A ``ChunkSink`` puts each
chunk's bytes on the client's socket, and cuts a client that reads nothing for
``[server] write_timeout_s`` while its socket is full (``ClientWriteTimeout``; ``client_reads``
guards the response's end the same way): otherwise it would hold its stream and the upstream's
connection for ever. Touches the response's socket
and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any, Protocol

import orjson
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.client_exceptions import ClientConnectionResetError
from aiohttp.http import StreamWriter

from gateway.core.answer import (
    NATIVE_EVENTS,
    USAGE_SO_FAR,
    Json,
    Usage,
    as_list,
    as_obj,
    usage_from_openai,
)
from gateway.core.errors import FailureKind, UpstreamFailure
from gateway.core.lifecycle import Lifecycle
from gateway.pipeline.request_record import RequestRecord
from gateway.upstream.chunk_stream import ChunkStream
from gateway.upstream.failover import CallKind, Stream
from gateway.upstream.sse import DONE, encode_data

log = logging.getLogger(__name__)


class ChunkWriter(Protocol):
    """The client's dialect on the wire: the bytes for each chunk, the end, a broken stream."""

    def chunk(self, chunk: Json) -> bytes:
        """The bytes for one chunk (``b""``: nothing to send for it)."""
        ...

    def end(self) -> bytes:
        """The bytes that close a whole stream."""
        ...

    def error(self, failure: UpstreamFailure | None) -> bytes:
        """The in-stream error for an upstream that broke (None: the gateway itself failed)."""
        ...


_NULL_USAGE = (b',"usage":null', b', "usage": null')


class OpenAIChunks:
    """Chat completions chunks as they are, the usage chunk only when the client asked."""

    __slots__ = ("include_usage",)

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage

    def chunk(self, chunk: Json) -> bytes:
        if not self.include_usage and "usage" in chunk:
            # Only the usage chunk itself goes: a chunk with no choices and a null usage (Azure's
            # first, its prompt filter results) is one the client would have had without us.
            if not chunk.get("choices") and chunk["usage"] is not None:
                return b""
            chunk = {k: v for k, v in chunk.items() if k != "usage"}
        return encode_data(orjson.dumps(chunk))

    def events(self, data: bytes, chunks: list[Json]) -> bytes:
        """The bytes for a plain read (``ChunkStream.push``): ``data``, the events as they
        came, unless a chunk holds a null ``usage`` the client did not ask for (OpenAI's
        chunks do when usage is asked upstream). That is cut from the bytes when each one is
        a ``,"usage":null`` (or spaced) and the bytes say ``"usage"`` nowhere else; else the
        chunks are encoded again, as ``chunk`` does."""
        if self.include_usage:
            return data
        n = 0
        for chunk in chunks:  # a loop, not sum() over a generator: this runs for every read
            if "usage" in chunk:
                n += 1
        if not n:
            return data
        # Each ``"usage"`` in the bytes must be one of those top-level keys: a nested one (a
        # provider's own ``{"id":…,"usage":null}``) stays, so the bytes cannot be cut blindly.
        if data.count(b'"usage"') == n:
            for key in _NULL_USAGE:
                if data.count(key) == n:
                    return data.replace(key, b"")
        return b"".join(self.chunk(c) for c in chunks)

    def end(self) -> bytes:
        return DONE

    def error(self, failure: UpstreamFailure | None) -> bytes:
        return encode_data(orjson.dumps(_stream_error(failure)))


WRITE_BUFFER_LIMIT = 64 * 1024
"""Bytes the client's socket may hold unsent before a chunk's write waits for it to drain."""


class ClientWriteTimeout(ClientConnectionResetError):
    """The client read nothing for ``write_timeout_s`` while its socket held more than
    ``WRITE_BUFFER_LIMIT`` unsent: treated as a client that left (499, the upstream closed)."""


class ChunkSink:
    """A prepared chunked response's body, one HTTP/1.1 chunk per call.

    The first piece goes through ``StreamResponse.write`` (it carries the buffered headers);
    the rest are framed here and handed to the transport in one synchronous call each: aiohttp's
    ``write`` costs five Python calls and a coroutine per piece, a fifth of the relay's own
    work per chunk. The socket's buffer is still bounded: past ``WRITE_BUFFER_LIMIT`` a write
    waits for the client to read (``drain``), as aiohttp's does. A compressed or unchunked
    response (HTTP/1.0) always goes through aiohttp.
    """

    __slots__ = ("_direct", "_out", "_resp", "_transport", "_write_timeout_s")

    def __init__(self, resp: web.StreamResponse, out: AbstractStreamWriter,
                 write_timeout_s: float) -> None:
        self._resp = resp
        self._out = out
        self._direct = False
        self._transport: asyncio.WriteTransport | None = None
        self._write_timeout_s = write_timeout_s

    @property
    def direct(self) -> bool:
        """True once pieces go straight to the transport (``write_now`` may be used)."""
        return self._direct

    async def send(self, data: bytes) -> None:
        if not self._direct:
            async with self._client_reads():  # aiohttp's write drains past its own limit
                await self._resp.write(data)
            out = self._out  # chunked: aiohttp chose it at ``prepare`` (HTTP/1.1, no length)
            self._direct = (isinstance(out, StreamWriter) and out.chunked
                            and not self._resp.compression)
            # The connection's one transport: once it is lost it says it is closing.
            self._transport = out.transport
            return
        if self.write_now(data):
            await self.drain()

    def write_now(self, data: bytes) -> bool:
        """One piece on the transport at once (``direct`` only); True when the client's socket
        now holds more than ``WRITE_BUFFER_LIMIT`` unsent and the writer should ``drain``."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ClientConnectionResetError("Cannot write to closing transport")
        frame = b"%x\r\n%b\r\n" % (len(data), data)
        self._out.output_size += len(frame)
        transport.write(frame)
        return transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT

    async def drain(self) -> None:
        async with self._client_reads():
            await self._out.drain()

    def _client_reads(self) -> contextlib.AbstractAsyncContextManager[None]:
        return client_reads(self._out, self._write_timeout_s)


@contextlib.asynccontextmanager
async def client_reads(out: AbstractStreamWriter, write_timeout_s: float) -> AsyncIterator[None]:
    """Within ``write_timeout_s``, or the client is cut (``ClientWriteTimeout``): around each
    write that may wait for the client to read, the response's end included (its drain)."""
    try:
        async with asyncio.timeout(write_timeout_s):
            yield
    except TimeoutError:
        if (transport := out.transport) is not None:
            transport.abort()  # its unsent bytes go too: nothing waits on them now
        raise ClientWriteTimeout(f"the client read nothing for {write_timeout_s:g} s") from None


class _Pushed:
    """The relay's half that runs in the upstream connection's callbacks (a ``ChunkConsumer``).

    Each chunk is accounted as it comes and the chunks of one read are written to the client's
    transport together, in one write; a plain read (``events``) is written whole, as the bytes
    it came in when the client's writer allows. When the client's socket holds more than
    ``WRITE_BUFFER_LIMIT`` unsent, the upstream read pauses and the relay's task is woken to
    wait for the drain; the task is also woken when the stream ends.
    """

    __slots__ = ("failure", "held", "keep", "over", "paused", "plain", "record", "sink", "tail",
                 "waiter", "writer")

    def __init__(self, sink: ChunkSink, tail: ChunkStream, writer: ChunkWriter,
                 record: RequestRecord, keep: list[Json] | None) -> None:
        self.sink, self.tail, self.writer, self.record, self.keep = (
            sink, tail, writer, record, keep)
        self.plain = writer.events if isinstance(writer, OpenAIChunks) else None
        """The client's writer for plain reads, when it has one."""
        self.held: list[bytes] = []
        """Bytes of chunks of the read being delivered, written with its last chunk."""
        self.waiter: asyncio.Future[None] | None = None
        self.over = False
        self.paused = False
        self.failure: BaseException | None = None

    def chunk(self, chunk: Json) -> None:
        if self.over:
            return
        try:
            data = _account(chunk, self.writer, self.record, self.keep)
        except Exception as exc:  # a writer failed: what came before it still goes out
            self._flush()
            self.end(exc)
            return
        if self.tail.more:  # chunks of one read go out in one write, with the last of them
            self.held.append(data)
            return
        if self.held:
            self.held.append(data)
            data = b"".join(self.held)
            self.held.clear()
        try:
            self._send(data)
        except Exception as exc:  # the client left: the task raises it
            self.end(exc)

    def _flush(self) -> None:
        if self.held:
            data = b"".join(self.held)
            self.held.clear()
            try:
                self._send(data)
            except Exception:  # the client left: what ends the stream is said by the caller
                log.debug("the client left before the chunks held were written")

    def events(self, data: bytes, chunks: list[Json]) -> None:
        """A plain read: its chunks carry no usage, so only their text and the bytes are left
        to handle."""
        if self.over or self.plain is None:
            return
        _keep_and_text(chunks, self.record, self.keep)  # one call for the read's chunks
        try:
            self._send(self.plain(data, chunks))
        except Exception as exc:  # the client left
            self.end(exc)

    def _send(self, data: bytes) -> None:
        if data and self.sink.write_now(data) and not self.paused:
            self.paused = True
            self.tail.pause()
            self._wake()

    def end(self, failure: BaseException | None) -> None:
        if not self.over:
            self.over, self.failure = True, failure
            self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


async def _relay_pushed(sink: ChunkSink, tail: ChunkStream, writer: ChunkWriter,
                        record: RequestRecord, keep: list[Json] | None) -> None:
    """The tail pushed from the upstream's callbacks: this task wakes only to wait for the
    client to drain and at the end (raising the ``UpstreamFailure`` that broke the stream, or
    the client's ``ConnectionResetError``)."""
    pushed = _Pushed(sink, tail, writer, record, keep)
    loop = asyncio.get_running_loop()
    try:
        tail.push(pushed, pushed.events if pushed.plain is not None else None)
        while True:
            if pushed.over:
                if pushed.failure is not None:
                    raise pushed.failure
                return
            if pushed.paused:
                await sink.drain()
                pushed.paused = False
                tail.resume()
                continue
            pushed.waiter = loop.create_future()
            await pushed.waiter
    finally:
        tail.stop_push()  # nothing reaches the client from upstream after this returns


async def relay(
    resp: web.StreamResponse, stream: Stream, writer: ChunkWriter, record: RequestRecord,
    keep: list[Json] | None = None, *, lifecycle: Lifecycle, out: AbstractStreamWriter,
    write_timeout_s: float,
) -> bool:
    """Write the stream to the client; True when it finished whole (the caller then writes the
    writer's ``end``). ``keep`` collects the chunks; ``out`` is the request's ``writer``."""
    sink = ChunkSink(resp, out, write_timeout_s)
    try:
        async with lifecycle.streaming():
            await _send_all(sink, stream, writer, record, keep)
    except TimeoutError:  # the shutdown deadline; upstream timeouts are ``UpstreamFailure``
        log.warning("stream from %s cut at the shutdown deadline", stream.deployment.id)
        stream.health.release_probe()  # no verdict on the deployment
        record.status, record.error = 503, "shutting_down"
        await sink.send(writer.error(SHUTDOWN))
        return False
    except UpstreamFailure as failure:
        log.warning("stream from %s broke: %s", stream.deployment.id, failure.message)
        stream.health.record_failure(failure, time.monotonic(), CallKind.STREAM)
        record.status = 502
        await sink.send(writer.error(failure))
        return False
    except ConnectionResetError:  # before ``Exception``; cancellation is handled below
        stream.health.release_probe()  # the client left: no verdict on the deployment
        raise
    except Exception:
        # Headers are sent: the error can only be told in the stream, never as a 500 page.
        log.exception("relaying the stream from %s failed", stream.deployment.id)
        stream.health.release_probe()
        record.status, record.error = 500, "internal_error"
        await sink.send(writer.error(None))
        return False
    except BaseException:
        stream.health.release_probe()  # the client left: no verdict on the deployment
        raise
    stream.health.record_success(record.timing.elapsed_ms(), stream.first_byte_ms,
                                 CallKind.STREAM)
    return True


async def _send_all(sink: ChunkSink, stream: Stream, writer: ChunkWriter,
                    record: RequestRecord, keep: list[Json] | None) -> None:
    """The chunks failover already holds, then the tail: pushed when the upstream can push
    and the client's socket is written directly, else pulled one by one."""
    # The head in one write: it is in hand, and each write is a system call (and the client's
    # wake-up) that costs more than the chunks' bytes.
    if head := b"".join([_account(chunk, writer, record, keep) for chunk in stream.head]):
        await sink.send(head)
    tail = stream.tail
    if isinstance(tail, ChunkStream) and sink.direct:
        await _relay_pushed(sink, tail, writer, record, keep)
    else:
        async for chunk in tail:
            await _write_chunk(sink, chunk, writer, record, keep)


def replay(chunks: Iterable[Json], writer: ChunkWriter) -> bytes:
    """The bytes of prepared chunks (a cache hit), without the stream's end."""
    return b"".join(writer.chunk(c) for c in chunks)


async def _write_chunk(
    sink: ChunkSink, chunk: Json, writer: ChunkWriter, record: RequestRecord,
    keep: list[Json] | None,
) -> None:
    if data := _account(chunk, writer, record, keep):
        await sink.send(data)


def _account(chunk: Json, writer: ChunkWriter, record: RequestRecord,
             keep: list[Json] | None) -> bytes:
    """Note what a chunk carries (usage, text, the chunk itself) and return its bytes for the
    client; the same for a pulled and a pushed chunk."""
    usage: Usage | None = usage_from_openai(chunk.get("usage"))
    if usage is not None:
        record.usage = usage
    # The gateway's own note (a translating adapter's), taken out here where it is read: no
    # client's writer and no cached chunk sees it.
    if (so_far := chunk.pop(USAGE_SO_FAR, None)) is not None:
        record.usage_so_far = so_far
    _keep_and_text((chunk,), record, keep)
    return writer.chunk(chunk)


_NO_DELTA: Json = {}


def _keep_and_text(chunks: Iterable[Json], record: RequestRecord,
                   keep: list[Json] | None) -> None:
    """Keep the chunks (``keep``) and note what the model wrote, for the token estimate of a
    stream that ends without usage: a pushed or pulled chunk one at a time, a plain read's
    chunks in one call. Tool calls and thinking are output billed like text: a client that
    leaves during one must not be charged for none."""
    text = record.streamed_text
    for chunk in chunks:
        if keep is not None:
            keep.append(chunk)
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or _NO_DELTA
            content = delta.get("content")
            if isinstance(content, str):
                text.append(content)
            if (calls := delta.get("tool_calls")) is not None:
                _call_text(calls, text)
        if (native := chunk.get(NATIVE_EVENTS)) is not None:
            _thinking_text(native, text)


def _call_text(calls: Any, text: list[str]) -> None:
    """The name and argument fragments of streamed tool calls (untrusted: read with care)."""
    for call in as_list(calls):
        function = as_obj(as_obj(call).get("function"))
        text.extend(part for key in ("name", "arguments")
                    if isinstance(part := function.get(key), str))


def _thinking_text(events: Any, text: list[str]) -> None:
    """An Anthropic upstream's thinking, which reaches the gateway only in its own events (a
    Messages client's ``NATIVE_EVENTS``): its text chunks are counted from ``choices``."""
    for event in as_list(events):
        thinking = as_obj(as_obj(event).get("delta")).get("thinking")
        if isinstance(thinking, str):
            text.append(thinking)


SHUTDOWN = UpstreamFailure(
    FailureKind.CONNECT, "the gateway is shutting down: the stream was cut before its end; retry")
"""What a stream cut at the shutdown deadline tells the client's dialect (``ChunkWriter.error``)."""
SHUTDOWN_ERROR: Json = {"error": {
    "message": "The gateway is shutting down: the stream was cut before its end; retry.",
    "type": "api_error", "param": None, "code": "stream_interrupted"}}


def _stream_error(failure: UpstreamFailure | None) -> Json:
    """OpenAI's in-stream error event, for an upstream that broke or the gateway itself."""
    if failure is SHUTDOWN:
        return SHUTDOWN_ERROR
    if failure is None:
        message, kind = "The gateway hit an internal error while streaming.", "api_error"
    else:
        message = f"The upstream stream broke after it had started: {failure.message}"
        kind = "upstream_error"
    return {"error": {"message": message, "type": kind, "param": None,
                      "code": "stream_interrupted"}}
