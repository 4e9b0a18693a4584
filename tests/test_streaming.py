"""Tests for gateway/pipeline/streaming.py: how relayed chunks are written to the client.

The provider is a small aiohttp app speaking OpenAI's event stream, which controls how its
bytes are cut into network writes and when it pauses; the client reads as the bytes come. A
relay that batched its writes (bench/RESULTS.md, issue 20: tried, not kept) must still pass
the test here: no chunk in hand is held back while the stream waits. The tail of an OpenAI
stream is pushed from the upstream connection's callbacks (``ChunkStream.push``): the tests
below hold that path to what the pulled one did, usage, backpressure and a client that leaves.
"""

from __future__ import annotations

import asyncio
import json
import socket
from ssl import SSLContext
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.observability.metrics import METRICS_KEY
from gateway.tenants.context import LEDGER_KEY, STORE_KEY
from gateway.tenants.ledger import recent
from gateway.upstream.appkeys import CLIENT_SESSION
from gateway.upstream.http_client import HttpClient
from tests.conftest import GatewayFactory, model, openai_provider
from tests.tasks import until

WORDS = [f" w{i}" for i in range(20)]
BODY = {"model": "small", "messages": [{"role": "user", "content": "Count"}], "stream": True}


def event(delta: dict[str, str], finish: str | None = None) -> bytes:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


HEAD = event({"role": "assistant", "content": ""}) + event({"content": "Counting:"})
REST = b"".join(event({"content": w}) for w in WORDS) + event({}, "stop") + b"data: [DONE]\n\n"


async def events(request: web.Request, first: bytes) -> web.StreamResponse:
    """A provider's event stream, begun with ``first`` (one network write)."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(first)
    return resp


async def gateway_on(
    aiohttp_server: Any, make_gateway: GatewayFactory, handler: Any, *,
    ssl: SSLContext | None = None, **config: Any,
) -> TestClient:
    """A gateway whose one model is served by ``handler`` (over TLS with ``ssl``);
    ``config`` adds to the gateway's settings."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    server: TestServer = await aiohttp_server(app, ssl=ssl)
    url = str(server.make_url("/v1"))
    assert url.startswith("https://" if ssl else "http://")
    return await make_gateway({**config, "providers": [openai_provider("p1", url)],
                               "models": [model("small", "p1", upstream_model="up")]})


def text_of(body: bytes) -> str:
    out = []
    for line in body.split(b"\n"):
        if line.startswith(b"data: {"):
            for choice in json.loads(line[6:])["choices"]:
                out.append(choice["delta"].get("content", ""))
    return "".join(out)


async def test_a_chunk_in_hand_is_not_held_back_while_the_stream_waits(
    aiohttp_server: Any, make_gateway: GatewayFactory
) -> None:
    seen = asyncio.Event()

    async def provider(request: web.Request) -> web.StreamResponse:
        resp = await events(request, HEAD + event({"content": " held?"}))
        await seen.wait()  # the rest only once the client has the chunk before the pause
        await resp.write(REST)
        return resp

    client = await gateway_on(aiohttp_server, make_gateway, provider)
    resp = await client.post("/v1/chat/completions", json=BODY)
    body = b""
    async for data in resp.content.iter_any():
        body += data
        if b" held?" in body:
            seen.set()
    assert text_of(body) == "Counting: held?" + "".join(WORDS)


def streamed_request(*, close: bool = False) -> bytes:
    """``BODY`` as raw HTTP/1.1 bytes; ``close`` asks for ``Connection: close``."""
    body = json.dumps(BODY).encode()
    connection = b"Connection: close\r\n" if close else b""
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n%bContent-Type: "
            b"application/json\r\nContent-Length: %d\r\n\r\n%b"
            % (connection, len(body), body))


async def raw_exchange(port: int, times: int) -> list[list[bytes]]:
    """``times`` streaming requests on one keep-alive connection, each answer's body as the
    HTTP/1.1 chunks it came in, decoded strictly (a wrong length breaks the next request)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    try:
        for _ in range(times):
            writer.write(streamed_request())
            head = await reader.readuntil(b"\r\n\r\n")
            assert b"transfer-encoding: chunked" in head.lower()
            chunks = []
            while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
                chunks.append(await reader.readexactly(size))
                assert await reader.readexactly(2) == b"\r\n"
            assert await reader.readexactly(2) == b"\r\n"
            answers.append(chunks)
    finally:
        writer.close()
    return answers


async def test_relayed_http_chunks_hold_whole_events_on_a_connection_kept_alive(
    aiohttp_server: Any, make_gateway: GatewayFactory
) -> None:
    async def provider(request: web.Request) -> web.StreamResponse:
        return await events(request, HEAD + REST)  # all in one network write

    client = await gateway_on(aiohttp_server, make_gateway, provider)
    for chunks in await raw_exchange(client.server.port, 2):
        assert all(c.startswith(b"data: ") and c.endswith(b"\n\n") for c in chunks)
        assert chunks[0].count(b"\n\n") == 2, "the head failover held, in one write"
        assert len(chunks) == 3, "the rest of the one read, in one write; then [DONE]"
        assert chunks[-1] == b"data: [DONE]\n\n"
        assert text_of(b"".join(chunks)) == "Counting:" + "".join(WORDS)


async def test_an_error_event_mid_stream_ends_the_body_with_the_error_and_no_done(
    aiohttp_server: Any, make_gateway: GatewayFactory
) -> None:
    error = b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'

    async def provider(request: web.Request) -> web.StreamResponse:
        resp = await events(request, HEAD + event({"content": " more"}))
        await resp.write(error)
        return resp

    client = await gateway_on(aiohttp_server, make_gateway, provider)
    [chunks] = await raw_exchange(client.server.port, 1)
    assert text_of(b"".join(chunks[:-1])) == "Counting: more"
    last = json.loads(chunks[-1].removeprefix(b"data: "))
    assert last["error"]["code"] == "stream_interrupted"
    assert b"[DONE]" not in b"".join(chunks)


def usage_event(prompt: int, completion: int) -> bytes:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up",
             "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                      "total_tokens": prompt + completion}}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


async def test_usage_and_text_of_chunks_pushed_one_read_at_a_time_are_accounted(
    aiohttp_server: Any, make_gateway: GatewayFactory
) -> None:
    async def provider(request: web.Request) -> web.StreamResponse:
        resp = await events(request, HEAD)
        for word in WORDS:  # each its own write: the tail reaches the relay piece by piece
            await resp.write(event({"content": word}))
        await resp.write(event({}, "stop") + usage_event(7, 21) + b"data: [DONE]\n\n")
        return resp

    client = await gateway_on(aiohttp_server, make_gateway, provider)
    resp = await client.post("/v1/chat/completions", json=BODY)
    body = await resp.read()
    assert text_of(body) == "Counting:" + "".join(WORDS)
    assert b'"usage"' not in body and body.endswith(b"data: [DONE]\n\n")  # not asked for
    app = client.server.app
    await app[LEDGER_KEY].flush()
    [row] = await recent(app[STORE_KEY])
    assert (row.tokens_in, row.tokens_out, row.estimated, row.status) == (7, 21, False, 200)


FILLER = " " + "x" * 16_000
FLOOD = 1500
"""Events of ``FILLER`` in a flood: ~24 MB, far more than the sockets between can hold."""


async def flood(request: web.Request) -> web.StreamResponse:
    """A provider that streams ``FLOOD`` large events as fast as it may write them."""
    resp = await events(request, HEAD)
    for _ in range(FLOOD):
        await resp.write(event({"content": FILLER}))
    await resp.write(event({}, "stop") + b"data: [DONE]\n\n")
    return resp


async def read_once_the_upstream_pauses(
    pool: HttpClient, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> bytes:
    """Wait until the gateway pauses its upstream read for this silent client, then read
    the whole answer (the upstream resumes to the end)."""
    def upstream_paused() -> bool:
        return any(c.transport is not None and not c.transport.is_reading()
                   for c in pool._open)

    await until(upstream_paused, "the upstream read pauses while the client reads nothing", 20)
    try:
        return await reader.read()
    finally:
        writer.close()


async def test_a_client_that_does_not_read_pauses_the_upstream_until_it_reads(
    aiohttp_server: Any, make_gateway: GatewayFactory
) -> None:
    client = await gateway_on(aiohttp_server, make_gateway, flood)
    assert client.server.port is not None
    reader, writer = await silent_client(client.server.port, close=True)
    answer = await read_once_the_upstream_pauses(client.server.app[CLIENT_SESSION], reader, writer)
    assert answer.count(FILLER.encode()) == FLOOD
    assert answer.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")


async def test_a_client_that_leaves_mid_stream_closes_the_upstream_connection(
    aiohttp_server: Any, make_gateway: GatewayFactory
) -> None:
    closed = asyncio.Event()
    more = asyncio.Event()

    async def provider(request: web.Request) -> web.StreamResponse:
        resp = await events(request, HEAD + event({"content": " one"}))
        await more.wait()
        try:
            while True:  # until the gateway lets go of this connection (the write fails, or
                await resp.write(event({"content": " again"}))  # aiohttp cancels the handler)
                await asyncio.sleep(0)  # lets the connection's closing be seen
        finally:
            closed.set()

    client = await gateway_on(aiohttp_server, make_gateway, provider)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(streamed_request())
    seen = b""
    while b" one" not in seen:
        seen += await reader.read(65536)
    writer.close()
    await writer.wait_closed()
    more.set()
    async with asyncio.timeout(10):
        await closed.wait()
    assert not client.server.app[CLIENT_SESSION]._open, "the upstream connection is not pooled"


async def gateway_with_write_timeout(aiohttp_server: Any, make_gateway: GatewayFactory,
                                     provider: Any) -> tuple[web.Application, int]:
    client = await gateway_on(aiohttp_server, make_gateway, provider,
                              server={"write_timeout_s": 0.5})
    assert client.server.port is not None
    return client.server.app, client.server.port


async def silent_client(
    port: int, *, close: bool = False
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client with a small receive window that sends a streamed request and reads nothing
    (yet); ``close`` asks for ``Connection: close``, so that the answer ends at EOF."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(streamed_request(close=close))
    return reader, writer


async def accounted_as_write_timeout(gateway: web.Application) -> None:
    """Waits for the request's ledger row: a 499, counted as a write timeout."""
    async def rows() -> list[Any]:
        await gateway[LEDGER_KEY].flush()
        return await recent(gateway[STORE_KEY])

    await until(rows, "the request is accounted", 20)
    [row] = await rows()
    assert row.status == 499
    assert gateway[METRICS_KEY].registry.get_sample_value(
        "gateway_client_connections_closed_total", {"reason": "write_timeout"}) == 1


async def test_a_client_that_reads_nothing_past_the_write_timeout_is_cut_and_the_upstream_closed(
    aiohttp_server: Any, make_gateway: GatewayFactory
) -> None:
    closed = asyncio.Event()

    async def provider(request: web.Request) -> web.StreamResponse:
        resp = await events(request, HEAD)
        try:
            while True:  # until the gateway lets go of this connection
                await resp.write(event({"content": " " + "x" * 16_000}))
        finally:
            closed.set()

    gateway, port = await gateway_with_write_timeout(aiohttp_server, make_gateway, provider)
    _, writer = await silent_client(port)
    try:
        async with asyncio.timeout(20):  # the client reads nothing meanwhile
            await closed.wait()
        await accounted_as_write_timeout(gateway)
        await until(lambda: not gateway[CLIENT_SESSION]._open, "the upstream is not pooled", 10)
    finally:
        writer.close()


async def test_a_client_that_reads_nothing_of_an_answer_already_whole_is_cut_at_the_write_timeout(
    aiohttp_server: Any, make_gateway: GatewayFactory
) -> None:
    async def provider(request: web.Request) -> web.StreamResponse:
        resp = await events(request, HEAD)
        # One event larger than any socket's buffers, with the stream's end in the same write:
        # the relay has the whole answer at once, and only the client's reading is left to wait
        # for (the end of the response, after the relay).
        await resp.write(event({"content": "x" * 4_000_000}) + event({}, "stop")
                         + b"data: [DONE]\n\n")
        return resp

    gateway, port = await gateway_with_write_timeout(aiohttp_server, make_gateway, provider)
    _, writer = await silent_client(port)
    try:
        await accounted_as_write_timeout(gateway)
    finally:
        writer.close()
