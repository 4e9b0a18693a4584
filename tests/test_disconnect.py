"""A client that goes away releases its upstream request (gateway/api/chat.py, upstream.py)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.core.appkeys import LIFECYCLE
from gateway.tenants.context import LEDGER_KEY, STORE_KEY
from gateway.tenants.ledger import recent
from gateway.upstream.appkeys import CLIENT_SESSION
from tests.conftest import GatewayFactory, model, openai_provider
from tests.fake_openai import FakeOpenAI, Reply
from tests.tasks import until
from tests.test_chat_api import USER

EVENT = b'data: {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up", ' \
    b'"choices": [{"index": 0, "delta": {"content": "' + b"x" * 16_000 + b'"}, ' \
    b'"finish_reason": null}]}\n\n'


async def test_client_disconnect_mid_stream_closes_upstream(
    one_upstream: tuple[TestClient, FakeOpenAI],
) -> None:
    client, fake = one_upstream
    fake.script.append(Reply(kind="hang", chunks_before_cut=3))
    async with aiohttp.ClientSession() as session:
        resp = await session.post(client.make_url("/v1/chat/completions"),
                                  json={"model": "small", "messages": USER, "stream": True})
        assert resp.status == 200
        await resp.content.readuntil(b"\n\n")
        resp.close()
    await asyncio.wait_for(fake.disconnected.wait(), timeout=10)
    assert not fake.release.is_set()


async def test_client_disconnect_while_waiting_cancels_upstream(
    one_upstream: tuple[TestClient, FakeOpenAI],
) -> None:
    client, fake = one_upstream
    fake.script.append(Reply(kind="hang"))
    async with aiohttp.ClientSession() as session:
        call = asyncio.ensure_future(session.post(
            client.make_url("/v1/chat/completions"), json={"model": "small", "messages": USER}))
        await fake.received.wait()
        call.cancel()
    await asyncio.wait_for(fake.disconnected.wait(), timeout=10)
    assert not fake.release.is_set()


async def test_a_client_leaving_a_pushed_stream_is_recorded_and_leaves_nothing_behind(
    one_upstream: tuple[TestClient, FakeOpenAI], caplog: pytest.LogCaptureFixture
) -> None:
    client, fake = one_upstream
    fake.script.append(Reply(kind="hang", chunks_before_cut=3))  # " from" pushed, then silence
    with caplog.at_level(logging.WARNING):
        async with aiohttp.ClientSession() as session:
            resp = await session.post(client.make_url("/v1/chat/completions"),
                                      json={"model": "small", "messages": USER, "stream": True})
            seen = b""
            while b" from" not in seen:
                seen += await resp.content.readany()
            resp.close()
        await asyncio.wait_for(fake.disconnected.wait(), timeout=10)
        app = client.server.app
        await until(lambda: app[LIFECYCLE].in_flight == 0, "the handler ends", 10)
        await app[LEDGER_KEY].flush()
        gc.collect()  # a task that died with its exception unseen says so when collected
    [row] = await recent(app[STORE_KEY])
    assert (row.status, row.tokens_out > 0) == (499, True)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_client_that_stops_reading_and_leaves_closes_the_paused_upstream(
    aiohttp_server: Any, make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    closed = asyncio.Event()

    async def provider(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            while True:  # far more than the sockets between can hold, until the gateway leaves
                await resp.write(EVENT)
        finally:
            closed.set()

    upstream = web.Application()
    upstream.router.add_post("/v1/chat/completions", provider)
    server: TestServer = await aiohttp_server(upstream)
    client = await make_gateway({"providers": [openai_provider("p1", str(server.make_url("/v1")))],
                                 "models": [model("small", "p1", upstream_model="up")]})
    app = client.server.app
    pool = app[CLIENT_SESSION]
    with caplog.at_level(logging.WARNING):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", client.server.port))
        _, writer = await asyncio.open_connection(sock=sock)
        body = json.dumps({"model": "small", "messages": USER, "stream": True}).encode()
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: "
                     b"application/json\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))

        def upstream_paused() -> bool:
            return any(c.transport is not None and not c.transport.is_reading()
                       for c in pool._open)

        await until(upstream_paused, "the upstream read pauses for the client", 10)
        writer.close()  # leaves while the relay waits for it to drain
        async with asyncio.timeout(10):
            await closed.wait()
        await until(lambda: app[LIFECYCLE].in_flight == 0, "the handler ends", 10)
        await app[LEDGER_KEY].flush()
        gc.collect()
    [row] = await recent(app[STORE_KEY])
    assert (row.status, row.tokens_out > 0) == (499, True)
    await until(lambda: not pool._open, "the upstream connection is neither open nor pooled", 10)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
