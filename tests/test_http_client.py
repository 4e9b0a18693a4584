"""Tests for gateway/upstream/http_client.py against raw HTTP servers on real sockets.

Each server is a few lines of asyncio that write exact bytes, so framing (sized, chunked, read to
the connection's end), keep-alive reuse, stale pooled connections and malformed answers are all
under the test's control.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from gateway.upstream.http_client import HttpClient
from gateway.upstream.http_response import (
    MAX_BUFFERED,
    ConnectError,
    HttpError,
    HttpTimeout,
)

Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0
        self.handlers: list[asyncio.Task[None]] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                self.requests.append(head + await reader.readexactly(length))
                await self.reply(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat?x=1"


@asynccontextmanager
async def serving(reply: Reply) -> AsyncIterator[Server]:
    server = Server(reply)
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield server
        # The client has closed its connections by now: each handler ends on that EOF.
        await asyncio.gather(*server.handlers, return_exceptions=True)


def raw(data: bytes, *, close: bool = False) -> Reply:
    """Answer every request with ``data`` exactly, then close the connection if asked."""
    async def reply(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        if close:
            writer.close()
    return reply


def sized(body: bytes, status: str = "200 OK", extra: str = "") -> Reply:
    return raw(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body)


async def post(client: HttpClient, url: str, **kw: float) -> tuple[int, bytes]:
    resp = await client.request("POST", url, headers={"Content-Type": "application/json"},
                                body=b'{"a": 1}', **kw)
    try:
        return resp.status, await resp.read()
    finally:
        resp.release()


async def test_a_sized_answer_is_read_and_its_connection_reused() -> None:
    reply = sized(b'{"ok": true}', extra="X-Thing: a\r\nX-Thing: b\r\n")
    async with serving(reply) as server, HttpClient() as client:
        assert await post(client, server.url) == (200, b'{"ok": true}')
        resp = await client.request("POST", server.url, headers={})
        assert resp.headers["x-thing"] == "a, b" and resp.headers.get("X-THING") == "a, b"
        await resp.read()
        resp.release()
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /v1/chat?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}".encode() in first
    assert first.endswith(b'\r\n\r\n{"a": 1}')


async def test_an_interim_answer_is_skipped() -> None:
    reply = raw(b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone")
    async with serving(reply) as server, HttpClient() as client:
        assert await post(client, server.url) == (201, b"done")
        assert await post(client, server.url) == (201, b"done")
        assert server.connections == 1


async def test_a_chunked_stream_arrives_piece_by_piece() -> None:
    second_sent = asyncio.Event()
    first_read = asyncio.Event()

    async def reply(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: text/event-stream\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await first_read.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()
        second_sent.set()

    async with serving(reply) as server, HttpClient() as client:
        resp = await client.request("POST", server.url, headers={})
        assert await resp.readany(5) == b"first"
        assert not second_sent.is_set()  # the first piece came before the second was sent
        first_read.set()
        assert await resp.read(5) == b"second"
        assert resp.at_eof()
        resp.release()
        assert await post(client, server.url) == (200, b"firstsecond")  # reused after a stream
        assert server.connections == 1


async def test_a_body_ended_by_closing_the_connection_is_whole() -> None:
    reply = raw(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it", close=True)
    async with serving(reply) as server, HttpClient() as client:
        assert await post(client, server.url) == (200, b"all of it")
        assert await post(client, server.url) == (200, b"all of it")
        assert server.connections == 2  # "Connection: close" is never pooled


async def test_a_pooled_connection_the_server_dropped_is_replaced_once() -> None:
    # Keep-alive announced, then dropped while idle.
    reply = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", close=True)
    async with serving(reply) as server, HttpClient() as client:
        assert await post(client, server.url) == (200, b"ok")
        assert await post(client, server.url) == (200, b"ok")
        assert server.connections == 2


async def test_no_answer_in_time_is_a_timeout_and_the_connection_is_dropped() -> None:
    async def reply(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers

    async with serving(reply) as server, HttpClient() as client:
        with pytest.raises(HttpTimeout):
            await post(client, server.url, first_byte_timeout_s=0.05)
        assert client._idle.get(("http", "127.0.0.1", server.port)) in (None, [])


async def test_a_stalled_body_times_out() -> None:
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await writer.drain()
        await reader.read()

    async with serving(reply) as server, HttpClient() as client:
        resp = await client.request("POST", server.url, headers={})
        with pytest.raises(HttpTimeout):
            await resp.read(0.05)
        resp.release()  # not at its end: closed, not pooled
        assert client._idle.get(("http", "127.0.0.1", server.port)) in (None, [])


async def test_a_shorter_read_timeout_after_a_longer_one_still_times_out_in_time() -> None:
    # One timer per response stays armed at the first read's 60 s deadline; a later read
    # that allows only 0.05 s must not wait for it (the test's own timeout would end it).
    reading = asyncio.Event()

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        await reading.wait()  # sent only once the client waits for it, with its timer armed
        writer.write(b"5\r\nfirst\r\n")
        await writer.drain()
        await reader.read()

    async with serving(reply) as server, HttpClient() as client:
        resp = await client.request("POST", server.url, headers={})
        reading.set()
        assert await resp.readany(60) == b"first"
        with pytest.raises(HttpTimeout):
            await resp.readany(0.05)
        resp.release()


async def test_a_body_that_keeps_coming_outlives_its_read_timeout() -> None:
    # Pieces 0.05 s apart, eight of them, each read allowed 0.3 s: the body takes longer than
    # one read's timeout, so a deadline that is not moved forward by each read would fire.
    async def reply(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(8):
            await asyncio.sleep(0.05)  # the server's pace, not a wait for the client
            writer.write(b"1\r\n%d\r\n" % i)
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with serving(reply) as server, HttpClient() as client:
        resp = await client.request("POST", server.url, headers={})
        # The server's eight pauses alone take 0.4 s, longer than one read's 0.3 s.
        assert await resp.read(0.3) == b"01234567"
        resp.release()


async def test_a_refused_connection_is_a_connect_error() -> None:
    async with serving(sized(b"")) as server:
        port = server.port
    async with HttpClient() as client:
        with pytest.raises(ConnectError):
            await post(client, f"http://127.0.0.1:{port}/")


async def test_a_malformed_answer_is_an_error_and_never_reused() -> None:
    reply = raw(b"HTTP/1.1 abc nonsense\r\n\r\n")
    async with serving(reply) as server, HttpClient() as client:
        with pytest.raises(HttpError):
            await post(client, server.url)
        with pytest.raises(HttpError):
            await post(client, server.url)
        assert server.connections == 2


async def test_a_cut_body_is_an_error() -> None:
    reply = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", close=True)
    async with serving(reply) as server, HttpClient() as client:
        resp = await client.request("POST", server.url, headers={})
        with pytest.raises(HttpError):
            await resp.read(5)
        resp.release()


async def test_gzip_bodies_are_decoded() -> None:
    body = gzip.compress(b'{"text": "' + b"z" * 5000 + b'"}')
    reply = sized(body, extra="Content-Encoding: gzip\r\n")
    async with serving(reply) as server, HttpClient() as client:
        status, data = await post(client, server.url)
    assert status == 200 and data == b'{"text": "' + b"z" * 5000 + b'"}'
    assert b"Accept-Encoding: identity" in server.requests[0]


async def test_a_body_larger_than_the_buffer_arrives_whole() -> None:
    body = bytes(range(256)) * (3 * MAX_BUFFERED // 256)
    async with serving(sized(body)) as server, HttpClient() as client:
        resp = await client.request("POST", server.url, headers={})
        first = await resp.readany(5)
        rest = await resp.read(5)
        resp.release()
        assert first + rest == body
        assert await post(client, server.url) == (200, body)
        assert server.connections == 1


@pytest.mark.parametrize("headers", [{"X-Bad": "a\r\nInjected: yes"}, {"Bad\nName": "v"}])
async def test_header_injection_is_refused_before_anything_is_sent(
    headers: dict[str, str]
) -> None:
    async with serving(sized(b"")) as server, HttpClient() as client:
        with pytest.raises(HttpError):
            await client.request("POST", server.url, headers=headers)
    assert server.requests == []


async def test_only_http_urls_are_accepted() -> None:
    async with HttpClient() as client:
        with pytest.raises(HttpError):
            await client.request("POST", "ftp://example.invalid/", headers={})


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
EXTENDED_BODY = (b'7;name="a b";q\r\ndata: 1\r\n' b"a\r\n\n\ndata: 22\r\n"
                 b"2;x=y\r\n\n\n\r\n0\r\nX-Checksum: 99\r\n\r\n")
"""Chunks with extensions, then trailers: the body is ``data: 1\\n\\ndata: 22\\n\\n``."""


async def test_chunks_of_one_read_reach_the_response_as_one_piece_without_their_framing(
) -> None:
    async with serving(raw(CHUNKED + EXTENDED_BODY)) as server, HttpClient() as client:
        resp = await client.request("POST", server.url, headers={})
        assert await resp.readany(5) == b"data: 1\n\ndata: 22\n\n"
        assert await resp.readany(5) == b""
        resp.release()


async def test_a_chunked_body_written_byte_by_byte_reads_whole() -> None:
    async def reply(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(CHUNKED)
        for i in range(len(EXTENDED_BODY)):  # a size line, an extension, a trailer: each cut
            writer.write(EXTENDED_BODY[i:i + 1])
            await writer.drain()

    async with serving(reply) as server, HttpClient() as client:
        assert await post(client, server.url) == (200, b"data: 1\n\ndata: 22\n\n")


async def test_a_response_s_trailers_never_become_the_next_response_s_headers() -> None:
    async with serving(raw(CHUNKED + EXTENDED_BODY)) as server, HttpClient() as client:
        for _ in range(2):
            resp = await client.request("POST", server.url, headers={})
            await resp.read(5)
            resp.release()
            assert resp.headers.get("x-checksum") is None
            assert resp.headers["trailer"] == "X-Checksum"
        assert server.connections == 1


async def test_a_gzip_stream_in_http_chunks_read_at_once_is_decoded_whole() -> None:
    events = b"".join(b'data: {"n": %d}\n\n' % i for i in range(50))
    packed = gzip.compress(events)
    framed = b"".join(b"%x\r\n%b\r\n" % (len(packed[i:i + 40]), packed[i:i + 40])
                      for i in range(0, len(packed), 40))
    reply = raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n"
                b"\r\n" + framed + b"0\r\n\r\n")
    async with serving(reply) as server, HttpClient() as client:
        assert await post(client, server.url) == (200, events)


async def test_chunks_before_a_malformed_one_still_reach_the_response() -> None:
    reply = raw(CHUNKED + b"5\r\nfirst\r\nzz\r\nnope\r\n", close=True)
    async with serving(reply) as server, HttpClient() as client:
        resp = await client.request("POST", server.url, headers={})
        assert await resp.readany(5) == b"first"
        with pytest.raises(HttpError):
            await resp.readany(5)
        resp.release()
