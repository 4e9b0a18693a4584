"""The shared harness of the provider adapter tests: an adapter, its fake, one deployment."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
import pytest
from aiohttp import web

from gateway.core.answer import Deployment, Json
from gateway.core.chat import ChatRequest, parse_chat_request
from gateway.core.config import ModelSettings, ProviderSettings, Timeouts
from gateway.core.errors import UpstreamFailure
from gateway.upstream.calls import Upstream
from gateway.upstream.chunk_stream import ChunkStream
from gateway.upstream.http_client import HttpClient
from gateway.upstream.providers.base import Provider
from gateway.upstream.providers.openai import OpenAIProvider

Fake = TypeVar("Fake")


@dataclass
class Harness(Generic[Fake]):
    fake: Fake
    provider: Provider
    deployment: Deployment

    def sent(self) -> Json:
        """The body of the last request the fake received."""
        body: Json = self.fake.requests[-1].body  # type: ignore[attr-defined]
        return body

    async def complete(self, **body: Any) -> Json:
        return (await self.provider.complete(chat(**body), self.deployment)).body

    async def stream(self, **body: Any) -> list[Json]:
        return [c async for c in self.provider.stream(chat(stream=True, **body), self.deployment)]

    async def complete_fails(self, **body: Any) -> UpstreamFailure:
        """The failure a plain request must end in."""
        with pytest.raises(UpstreamFailure) as caught:
            await self.complete(**body)
        return caught.value

    async def stream_fails(self, **body: Any) -> tuple[list[Json], UpstreamFailure]:
        """The chunks a stream yields before the failure it must end in, and that failure."""
        seen: list[Json] = []
        with pytest.raises(UpstreamFailure) as caught:
            async for chunk in self.provider.stream(chat(stream=True, **body), self.deployment):
                seen.append(chunk)
        return seen, caught.value


def deltas(chunks: list[Json]) -> list[Json]:
    """The OpenAI deltas of streamed chunks (the usage-only chunk has none)."""
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


def chat(**body: Any) -> ChatRequest:
    body.setdefault("model", "smart")
    body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return parse_chat_request(orjson.dumps(body))


def event(content: str | None, finish: str | None = None) -> bytes:
    """One OpenAI stream event: a chunk with ``content`` (none: an empty delta), ``finish``."""
    delta = {} if content is None else {"content": content}
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def contents(chunks: list[Json]) -> list[str | None]:
    """The content of each chunk's first choice (None where its delta has none)."""
    return [c["choices"][0]["delta"].get("content") for c in chunks]


class Collected:
    """A ``ChunkConsumer`` keeping what is pushed to it; it holds the stream to its contract
    (no chunk after the end, one end)."""

    def __init__(self) -> None:
        self.chunks: list[Json] = []
        self.failure: Exception | None = None
        self.ended = asyncio.Event()

    def chunk(self, chunk: Json) -> None:
        assert not self.ended.is_set(), "a chunk after the end"
        self.chunks.append(chunk)

    def end(self, failure: Exception | None) -> None:
        assert not self.ended.is_set(), "ended twice"
        self.failure = failure
        self.ended.set()


def open_stream(client: HttpClient, url: str, chunk_timeout_s: float = 5) -> ChunkStream:
    """A streamed chat from the OpenAI adapter at ``url``, as failover hands it to the relay."""
    deployment = Deployment(
        ModelSettings(name="smart", provider="p", upstream_model="up", tier="smart"),
        ProviderSettings(name="p", kind="openai", base_url=url,
                         timeouts=Timeouts(chunk_timeout_s=chunk_timeout_s)))
    stream = OpenAIProvider(Upstream(client)).stream(chat(stream=True), deployment)
    assert isinstance(stream, ChunkStream)
    return stream


HOLD = web.AppKey("hold", asyncio.Event)


async def event_stream(aiohttp_server: Any, pieces: list[bytes], hold: bool = False,
                       after: tuple[bytes, ...] = ()) -> tuple[str, asyncio.Event]:
    """A provider's event stream at ``{url}/chat/completions``: the URL and its hold. It writes
    ``pieces``, each its own network write, then, with ``hold``, waits for the hold to be set
    before writing ``after``."""
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in pieces:
            await resp.write(piece)
        if hold:
            await request.app[HOLD].wait()
        for piece in after:
            await resp.write(piece)
        return resp

    app = web.Application()
    app[HOLD] = asyncio.Event()
    app.router.add_post("/v1/chat/completions", handler)
    server = await aiohttp_server(app)
    return str(server.make_url("/v1")), app[HOLD]
