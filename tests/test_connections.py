"""Client connections on a real ``gateway serve`` (gateway/api/connections.py, api/body.py).

Slow clients are raw sockets: a head or a body sent a byte at a time, a connection that says
nothing, one connection too many. Each gets its guard's answer (a 408 or 503 in OpenAI's error
JSON, or a closed socket) while normal requests on the same gateway go on being answered.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fake_openai import FakeOpenAI
from tests.test_metrics import samples, total
from tests.test_serve import Served, serving

SHORT = "header_timeout_s = 0.5\nbody_timeout_s = 0.5"
"""Short head and body limits; the idle limit stays long, so that the normal traffic's pooled
connections are not closed under the client's feet between two requests."""
PACE_S = 0.1
"""How slowly a slow client sends: the guards' limits are several of its steps."""
STEPS = 100
"""A slow client gives up after this many steps (ten seconds, twenty times the limits)."""
CHAT = {"model": "small", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def short_limits(tmp_path: Path, fake_openai: tuple[FakeOpenAI, str]
                       ) -> AsyncIterator[Served]:
    async with serving(tmp_path, fake_openai, extra=SHORT) as running:
        yield running


async def _connect(base: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = base.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def _trickle(writer: asyncio.StreamWriter, reader: asyncio.StreamReader,
                   piece: bytes) -> bytes:
    """Send ``piece`` every ``PACE_S`` until the gateway answers or closes; what it sent."""
    reply = asyncio.ensure_future(reader.read())
    try:
        for _ in range(STEPS):
            if reply.done():
                break
            writer.write(piece)
            await asyncio.sleep(PACE_S)  # the client's own pace, not a wait for the gateway
        return await asyncio.wait_for(reply, timeout=PACE_S * STEPS)
    finally:
        reply.cancel()
        writer.close()


def _json_answer(raw: bytes, status: int) -> dict[str, Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), raw[:200]
    assert b"application/json" in head
    error: dict[str, Any] = json.loads(body)["error"]
    return error


async def _normal_requests(session: aiohttp.ClientSession, base: str, count: int) -> list[int]:
    statuses = []
    for _ in range(count):
        async with session.post(f"{base}/v1/chat/completions", json=CHAT) as resp:
            await resp.read()
            statuses.append(resp.status)
    return statuses


async def _closed_count(session: aiohttp.ClientSession, base: str, reason: str) -> float:
    async with session.get(f"{base}/metrics") as resp:
        return total(samples(await resp.text()), "gateway_client_connections_closed_total",
                     reason=reason)


async def test_a_head_sent_a_line_at_a_time_gets_408_while_others_are_served(
    short_limits: Served,
) -> None:
    _, base, _, session = short_limits
    reader, writer = await _connect(base)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n")
    slow = asyncio.ensure_future(_trickle(writer, reader, b"X-Slow: 1\r\n"))
    normal = await _normal_requests(session, base, 5)
    error = _json_answer(await slow, 408)
    assert error["code"] == "request_timeout"
    assert normal == [200] * 5
    assert await _closed_count(session, base, "header_timeout") == 1


async def test_a_body_sent_a_byte_at_a_time_gets_408_and_the_connection_closes(
    short_limits: Served,
) -> None:
    _, base, _, session = short_limits
    reader, writer = await _connect(base)
    key = session.headers["Authorization"]
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 1000\r\n"
                 b"Authorization: " + key.encode() + b"\r\n\r\n{")
    slow = asyncio.ensure_future(_trickle(writer, reader, b" "))
    normal = await _normal_requests(session, base, 5)
    raw = await slow
    assert _json_answer(raw, 408)["code"] == "request_timeout"
    assert b"Connection: close" in raw.partition(b"\r\n\r\n")[0]
    assert normal == [200] * 5
    assert await _closed_count(session, base, "body_timeout") == 1


async def test_a_silent_connection_is_closed_and_so_is_an_idle_kept_alive_one(
    tmp_path: Path, fake_openai: tuple[FakeOpenAI, str],
) -> None:
    async with serving(tmp_path, fake_openai, extra="idle_timeout_s = 0.5") as served:
        await _idle_connections_closed(served)


async def _idle_connections_closed(served: Served) -> None:
    _, base, _, session = served
    reader, writer = await _connect(base)
    assert await asyncio.wait_for(reader.read(), timeout=PACE_S * STEPS) == b""
    writer.close()
    reader, writer = await _connect(base)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), timeout=PACE_S * STEPS)
    assert answer.startswith(b"HTTP/1.1 200 "), "answered, then closed once idle"
    writer.close()
    assert await _closed_count(session, base, "idle_timeout") >= 2


async def test_a_connection_over_the_cap_gets_503_until_one_closes(
    tmp_path: Path, fake_openai: tuple[FakeOpenAI, str],
) -> None:
    async with serving(tmp_path, fake_openai, extra="max_connections = 3") as served:
        _, base, _, session = served
        held = [await _connect(base) for _ in range(3)]
        reader, writer = await _connect(base)
        raw = await asyncio.wait_for(reader.read(), timeout=PACE_S * STEPS)
        writer.close()
        assert _json_answer(raw, 503)["code"] == "too_many_connections"
        for _, w in held:
            w.close()
            await w.wait_closed()
        # The gateway sees the closes when its loop next runs: poll, with a bound.
        for _ in range(STEPS):
            try:
                statuses = await _normal_requests(session, base, 1)
                break
            except aiohttp.ServerDisconnectedError:
                continue
        assert statuses == [200]
        assert await _closed_count(session, base, "over_capacity") >= 1


async def test_an_oversized_header_gets_openai_error_json(short_limits: Served) -> None:
    proc, base, _, session = short_limits
    async with session.post(f"{base}/v1/chat/completions", json=CHAT,
                            headers={"Authorization": "Bearer " + "k" * 10_000}) as resp:
        assert resp.status == 431
        error = (await resp.json())["error"]
    assert error["code"] == "request_header_fields_too_large"
    assert error["type"] == "invalid_request_error"
    assert (await _normal_requests(session, base, 1)) == [200]
    assert proc.returncode is None
