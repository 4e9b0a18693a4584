"""Tests for gateway/app.py's errors middleware: an error becomes OpenAI's error JSON before the
answer begins, and a cut connection after it, never a second response inside the first."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.app import errors_middleware


async def broken_after_first_bytes(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    await response.write(b'data: {"choices": []}\n\n')
    raise RuntimeError("a bug after the stream began")


async def broken_before_answer(request: web.Request) -> web.StreamResponse:
    raise RuntimeError("a bug before anything was written")


@pytest.fixture
async def client(aiohttp_client: Any) -> Any:
    app = web.Application(middlewares=[errors_middleware])
    app.router.add_get("/after", broken_after_first_bytes)
    app.router.add_get("/before", broken_before_answer)
    return await aiohttp_client(app)


async def test_an_error_before_the_answer_is_a_500_in_openai_error_json(client: Any) -> None:
    response = await client.get("/before", headers={"x-request-id": "req-before"})
    assert response.status == 500
    assert response.headers["x-request-id"] == "req-before"
    assert (await response.json())["error"]["message"] == "The gateway hit an internal error."


async def test_an_error_after_the_answer_began_cuts_the_connection_and_writes_nothing_more(
        client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="gateway")
    response = await client.get("/after", headers={"x-request-id": "req-after"})
    assert response.status == 200
    received = bytearray()
    with pytest.raises(aiohttp.ClientPayloadError):
        async for data in response.content.iter_any():
            received += data
    assert bytes(received) == b'data: {"choices": []}\n\n'
    assert any("req-after" in r.getMessage() and "connection closed" in r.getMessage()
               for r in caplog.records)
