"""A client that goes away releases its upstream request (gateway/api/chat.py, upstream.py)."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp.test_utils import TestClient

from tests.fake_openai import FakeOpenAI, Reply
from tests.test_chat_api import USER


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
