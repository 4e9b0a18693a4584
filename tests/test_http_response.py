"""Tests for gateway/upstream/http_response.py: a body pushed to a sink from the connection.

The upstream here is a raw asyncio server, so each test decides exactly which bytes share one
network write (several HTTP chunks in one read reach the response as several ``_feed`` calls
from one ``data_received``). The stream on top is the OpenAI adapter's ``ChunkStream``.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.core.answer import Json
from gateway.core.errors import FailureKind, UpstreamFailure
from gateway.upstream.chunk_stream import ChunkStream
from gateway.upstream.http_client import HttpClient
from tests.provider_harness import contents, event, open_stream
from tests.tasks import until

HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n")


def frame(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Start = Callable[[Script], Awaitable[str]]


@pytest.fixture
async def upstream() -> AsyncIterator[Start]:
    """Starts a raw HTTP server running a script per connection; gives its base URL."""
    servers: list[asyncio.Server] = []
    handlers: list[asyncio.Task[object]] = []

    async def start(script: Script) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.append(task)
            try:
                await reader.readuntil(b"\r\n\r\n")
                await script(reader, writer)
            except (asyncio.CancelledError, ConnectionError):
                pass  # the test is over, or the gateway hung up: either ends the script
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    yield start
    for server in servers:
        server.close()
    for task in handlers:
        task.cancel()
    await asyncio.gather(*handlers)


class PausingConsumer:
    """Pauses the stream at the first pushed chunk, as the relay does for a client behind."""

    def __init__(self, stream: ChunkStream) -> None:
        self.stream = stream
        self.chunks: list[Json] = []
        self.ended = asyncio.Event()
        self.failure: Exception | None = None

    def chunk(self, chunk: Json) -> None:
        if not self.chunks:
            self.stream.pause()
        self.chunks.append(chunk)

    def end(self, failure: Exception | None) -> None:
        self.failure = failure
        self.ended.set()


async def test_the_read_timer_stays_off_while_the_sink_is_paused_mid_read(upstream: Start) -> None:
    chunk_timeout_s = 0.2
    burst, finish = asyncio.Event(), asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD + frame(event("a")))
        await burst.wait()
        # Three HTTP chunks in one write: the sink pauses at the first, the others follow in
        # the same read and must not start the read timer again.
        writer.write(frame(event("b")) + frame(event("c")) + frame(event("d")))
        await finish.wait()
        writer.write(frame(event(None, "stop") + b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()

    url = await upstream(script)
    async with HttpClient() as client:
        stream = open_stream(client, url, chunk_timeout_s)
        try:
            first = await stream.__anext__()
            consumer = PausingConsumer(stream)
            stream.push(consumer)
            burst.set()
            await until(lambda: len(consumer.chunks) == 3, "b, c and d reach the consumer", 10)
            # Paused by the consumer, the stream must outlive its read timer: only the
            # upstream's silence while the gateway reads counts against it. The timer armed
            # before the pause fires, and must neither cut the stream nor arm itself again.
            response = stream._response
            assert response is not None
            await until(lambda: response._timer is None, "the read timer has fired", 10)
            assert not consumer.ended.is_set()
            stream.resume()
            finish.set()
            async with asyncio.timeout(10):
                await consumer.ended.wait()
        finally:
            await stream.aclose()
    assert (contents([first, *consumer.chunks]), consumer.failure) == (
        ["a", "b", "c", "d", None], None)


BODY = event("a") + event("b") + event(None, "stop") + b"data: [DONE]\n\n"


def crlf(body: bytes) -> bytes:
    return body.replace(b"\n", b"\r\n")


def sized(body: bytes, encoding: bytes = b"") -> bytes:
    extra = b"Content-Encoding: %b\r\n" % encoding if encoding else b""
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n%b"
            b"Content-Length: %d\r\n\r\n%b" % (extra, len(body), body))


def chunked(body: bytes, encoding: bytes = b"") -> bytes:
    extra = b"Content-Encoding: %b\r\n" % encoding if encoding else b""
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n%b"
            b"Transfer-Encoding: chunked\r\n\r\n" % extra
            + b"".join(frame(body[i:i + 7]) for i in range(0, len(body), 7)) + b"0\r\n\r\n")


def to_close(body: bytes) -> bytes:  # no length, not chunked: the body ends with the connection
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n" + body


WHOLE = (["a", "b", None], "NoneType")
RESPONSES = {  # name: (the response, the contents and the failure either way)
    "sized": (sized(BODY), WHOLE),
    "chunked-7-bytes-a-chunk": (chunked(BODY), WHOLE),
    "crlf-line-ends": (chunked(crlf(BODY)), WHOLE),
    "gzip-sized": (sized(gzip.compress(BODY), b"gzip"), WHOLE),
    "gzip-chunked": (chunked(gzip.compress(BODY), b"gzip"), WHOLE),
    "ended-by-close": (to_close(BODY), WHOLE),
    # Shorter than its length: the connection's end cuts the second event.
    "cut-mid-event": (sized(event("a") + event("b"))[:-3], (["a"], "UpstreamFailure")),
}


@pytest.mark.parametrize("name", RESPONSES)
async def test_a_response_written_byte_by_byte_is_pushed_as_it_is_pulled(
    upstream: Start, name: str
) -> None:
    response, (texts, failure_type) = RESPONSES[name]

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for i in range(len(response)):  # one byte a write, each drained: many small reads
            writer.write(response[i:i + 1])
            await writer.drain()

    url = await upstream(script)
    outcomes = []
    async with HttpClient() as client:
        for push in (False, True):
            stream = open_stream(client, url, 10)
            chunks: list[Json] = []
            failure: Exception | None = None
            try:
                chunks.append(await stream.__anext__())
                if push:
                    consumer = PausingConsumer(stream)
                    stream.push(consumer)
                    stream.resume()  # it paused at its first chunk
                    async with asyncio.timeout(10):
                        await consumer.ended.wait()
                    chunks += consumer.chunks
                    failure = consumer.failure
                else:
                    try:
                        async for chunk in stream:
                            chunks.append(chunk)
                    except Exception as exc:
                        failure = exc
            finally:
                await stream.aclose()
            outcomes.append((contents(chunks), type(failure).__name__, str(failure)))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][:2] == (texts, failure_type)


async def test_a_body_that_stops_decoding_ends_the_pushed_stream_as_the_pulled_one(
    upstream: Start,
) -> None:
    go = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        deflate = zlib.compressobj(wbits=31)  # gzip
        head = deflate.compress(event("a")) + deflate.flush(zlib.Z_SYNC_FLUSH)
        writer.write(HEAD.replace(b"\r\n\r\n", b"\r\nContent-Encoding: gzip\r\n\r\n")
                     + frame(head))
        await go.wait()
        go.clear()
        # A reserved deflate block type: zlib raises inside the connection's data_received.
        writer.write(frame(b"\xff" * 16))
        await reader.read()  # the connection stays open: only the decoder ends the stream

    url = await upstream(script)
    outcomes = []
    async with HttpClient() as client:
        for push in (False, True):
            stream = open_stream(client, url, 10)
            try:
                chunks = [await stream.__anext__()]
                go.set()
                if push:
                    consumer = PausingConsumer(stream)
                    stream.push(consumer)
                    stream.resume()
                    async with asyncio.timeout(10):
                        await consumer.ended.wait()
                    failure = consumer.failure
                else:
                    with pytest.raises(UpstreamFailure) as raised:
                        await stream.__anext__()
                    failure = raised.value
            finally:
                await stream.aclose()
            assert isinstance(failure, UpstreamFailure)
            outcomes.append((contents(chunks), failure.kind, failure.message))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][:2] == (["a"], FailureKind.CONNECT)
    assert "undecodable gzip body" in outcomes[0][2]
