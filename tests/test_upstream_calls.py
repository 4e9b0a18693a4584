"""Provider calls (gateway/upstream/calls.py) against a real HTTP server: answers that never end."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from gateway.core.config import Timeouts
from gateway.core.errors import FailureKind, UpstreamFailure
from gateway.upstream.calls import MAX_ANSWER_BYTES, Upstream
from gateway.upstream.http_client import HttpClient

PIECE = b" " * (1 << 20)


async def _endless(request: web.Request) -> web.StreamResponse:
    """A JSON answer whose body never ends: whitespace, a megabyte at a time, until the
    gateway hangs up (the write then fails and the handler ends)."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    for _ in range(MAX_ANSWER_BYTES // len(PIECE) * 4):  # bounded, so a broken test ends
        await response.write(PIECE)
    return response


async def _sized(request: web.Request) -> web.StreamResponse:
    size = int(request.query["size"])
    return web.Response(body=b"[" + b" " * (size - 2) + b"]", content_type="application/json")


@pytest.fixture
async def url(aiohttp_server: Any) -> str:
    app = web.Application()
    app.router.add_post("/endless", _endless)
    app.router.add_post("/sized", _sized)
    server = await aiohttp_server(app)
    return str(server.make_url(""))


async def test_an_answer_past_the_size_limit_is_a_bad_response(url: str) -> None:
    async with HttpClient() as client:
        with pytest.raises(UpstreamFailure, match="larger than") as caught:
            await Upstream(client).post_json(f"{url}/endless", headers={}, body=b"{}",
                                             timeouts=Timeouts())
    assert caught.value.kind is FailureKind.BAD_RESPONSE


async def test_an_answer_at_the_size_limit_is_read_whole(url: str) -> None:
    async with HttpClient() as client:
        answer = await Upstream(client).post_json(
            f"{url}/sized?size={MAX_ANSWER_BYTES}", headers={}, body=b"{}", timeouts=Timeouts())
    assert answer.body == []
