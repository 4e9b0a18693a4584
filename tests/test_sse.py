"""Reading providers' event streams (gateway/upstream/sse.py), over a real HTTP connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from gateway.core.errors import UpstreamFailure
from gateway.upstream.http_client import HttpClient
from gateway.upstream.sse import SseEvent, iter_sse

PIECES = [
    b": a comment line\n",
    b"event: message_start\ndata: {\"a\"",
    b": 1}\n\nda",
    b"ta: line one\r\ndata: line two\r\n\r\n",
    b"data:no-space\n\n",
    b"data: [DONE]",
]


RELEASE = web.AppKey("release", asyncio.Event)


async def _serve(aiohttp_server: Any, pieces: list[bytes], hold: bool = False) -> str:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in pieces:
            await resp.write(piece)
        if hold:
            await request.app[RELEASE].wait()
        return resp

    app = web.Application()
    app[RELEASE] = asyncio.Event()
    app.router.add_get("/", handler)
    server = await aiohttp_server(app)
    return str(server.make_url("/"))



async def test_events_split_across_reads_are_reassembled(aiohttp_server: Any) -> None:
    url = await _serve(aiohttp_server, PIECES)
    async with HttpClient() as client:
        resp = await client.request("GET", url, headers={})
        events = [e async for e in iter_sse(resp, chunk_timeout_s=5)]
        resp.release()
    assert events == [
        SseEvent("message_start", b'{"a": 1}'),
        SseEvent("", b"line one\nline two"),
        SseEvent("", b"no-space"),
        SseEvent("", b"[DONE]"),
    ]


async def test_a_stalled_stream_times_out_as_upstream_failure(aiohttp_server: Any) -> None:
    url = await _serve(aiohttp_server, [b"data: 1\n\n"], hold=True)
    async with HttpClient() as client:
        resp = await client.request("GET", url, headers={})
        events = iter_sse(resp, chunk_timeout_s=0.05)
        assert await anext(events) == SseEvent("", b"1")
        with pytest.raises(UpstreamFailure, match="no stream data"):
            await anext(events)
