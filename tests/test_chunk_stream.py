"""Tests for gateway/upstream/chunk_stream.py: a stream pushed to a consumer ends as pulled.

A real aiohttp app writes OpenAI events, each piece its own network write, to the gateway's own
HTTP client; the OpenAI adapter's ``ChunkStream`` is read once by pulling every chunk and once
by pulling the first and having the rest pushed, chunk by chunk or, for plain reads, as reads.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.core.answer import Json
from gateway.core.errors import FailureKind, UpstreamFailure
from gateway.upstream.chunk_stream import ChunkStream
from gateway.upstream.http_client import HttpClient
from tests.provider_harness import Collected, contents, event, event_stream, open_stream

WHOLE = [event("a"), event("b"), event(None, "stop"), b"data: [DONE]\n\n", b"data: late\n\n"]
ERROR_MID = [event("a"), event("b") + b'data: {"error": {"message": "overloaded"}}\n\n']
CUT = [event("a"), event("b")]  # the body ends with no finish and no [DONE]
NO_DONE = [event("a"), event(None, "stop")]  # finished, then the body ends: whole


async def pulled(stream: ChunkStream) -> tuple[list[Json], FailureKind | None]:
    chunks: list[Json] = []
    try:
        async for chunk in stream:
            chunks.append(chunk)
    except UpstreamFailure as failure:
        return chunks, failure.kind
    return chunks, None


async def pushed(stream: ChunkStream) -> tuple[list[Json], FailureKind | None]:
    first = await stream.__anext__()
    consumer = Collected()
    stream.push(consumer)
    async with asyncio.timeout(10):
        await consumer.ended.wait()
    return [first, *consumer.chunks], consumer.failure.kind if consumer.failure else None


class Reads(Collected):
    """Takes plain reads too (``push``'s ``events``), their chunks in line with the others."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[bytes] = []

    def events(self, data: bytes, chunks: list[Json]) -> None:
        assert not self.ended.is_set(), "a read after the end"
        self.reads.append(data)
        self.chunks += chunks


async def pushed_with_reads(stream: ChunkStream) -> tuple[list[Json], FailureKind | None]:
    first = await stream.__anext__()
    consumer = Reads()
    stream.push(consumer, consumer.events)
    async with asyncio.timeout(10):
        await consumer.ended.wait()
    assert all(data.endswith(b"\n\n") for data in consumer.reads)
    return [first, *consumer.chunks], consumer.failure.kind if consumer.failure else None


@pytest.mark.parametrize(("pieces", "texts", "kind"), [
    (WHOLE, ["a", "b", None], None),
    (ERROR_MID, ["a", "b"], FailureKind.ERROR_IN_BODY),
    (CUT, ["a", "b"], FailureKind.CONNECT),
    (NO_DONE, ["a", None], None),
], ids=["whole", "error-event-mid-stream", "cut-before-finish", "finished-without-done"])
async def test_pushed_chunks_and_their_end_are_those_pulled(
    aiohttp_server: Any, pieces: list[bytes], texts: list[str | None], kind: FailureKind | None
) -> None:
    url, _ = await event_stream(aiohttp_server, pieces)
    async with HttpClient() as client:
        outcomes = []
        for read in (pulled, pushed, pushed_with_reads):
            stream = open_stream(client, url)
            try:
                chunks, failure = await read(stream)
            finally:
                await stream.aclose()
            outcomes.append((contents(chunks), failure))
    assert outcomes == [(texts, kind)] * 3


async def test_a_pushed_stream_that_stalls_ends_with_a_timeout(aiohttp_server: Any) -> None:
    url, _ = await event_stream(aiohttp_server, [event("a"), event("b")], hold=True)
    async with HttpClient() as client:
        stream = open_stream(client, url, chunk_timeout_s=0.2)
        try:
            chunks, failure = await pushed(stream)
        finally:
            await stream.aclose()
    assert (contents(chunks), failure) == (["a", "b"], FailureKind.TIMEOUT)


class Pausing(Collected):
    """Pauses the stream at its first chunk, as the relay does when the client is behind."""

    def __init__(self, stream: ChunkStream) -> None:
        super().__init__()
        self.stream = stream

    def chunk(self, chunk: Json) -> None:
        if not self.chunks:
            self.stream.pause()
        super().chunk(chunk)


async def test_a_consumer_that_pauses_as_the_push_begins_stays_paused_until_it_resumes(
    aiohttp_server: Any,
) -> None:
    url, hold = await event_stream(aiohttp_server, [event("a") + event("b")], hold=True,
                                   after=(event(None, "stop") + b"data: [DONE]\n\n",))
    async with HttpClient() as client:
        stream = open_stream(client, url)
        try:
            first = await stream.__anext__()  # "b" came in the same read: it is pushed at once
            consumer = Pausing(stream)
            stream.push(consumer)
            transport = next(iter(client._open)).transport
            assert transport is not None and not transport.is_reading()
            stream.resume()
            assert transport.is_reading()
            hold.set()
            async with asyncio.timeout(10):
                await consumer.ended.wait()
        finally:
            await stream.aclose()
    assert (contents([first, *consumer.chunks]), consumer.failure) == (["a", "b", None], None)
