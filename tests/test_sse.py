"""Reading providers' event streams (gateway/upstream/sse.py), over a real HTTP connection."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.errors import FailureKind, UpstreamFailure
from gateway.upstream.http_client import HttpClient
from gateway.upstream.sse import MAX_EVENT_BYTES, SseEvent, iter_sse
from tests.provider_harness import event_stream

PIECES = [
    b": a comment line\n",
    b"event: message_start\ndata: {\"a\"",
    b": 1}\n\nda",
    b"ta: line one\r\ndata: line two\r\n\r\n",
    b"data:no-space\n\n",
    b"data: [DONE]",
]


async def test_events_split_across_reads_are_reassembled(aiohttp_server: Any) -> None:
    url, _ = await event_stream(aiohttp_server, PIECES)
    async with HttpClient() as client:
        resp = await client.request("POST", f"{url}/chat/completions", headers={})
        events = [e async for e in iter_sse(resp, chunk_timeout_s=5)]
        resp.release()
    assert events == [
        SseEvent("message_start", b'{"a": 1}'),
        SseEvent("", b"line one\nline two"),
        SseEvent("", b"no-space"),
        SseEvent("", b"[DONE]"),
    ]


async def test_a_stalled_stream_times_out_as_upstream_failure(aiohttp_server: Any) -> None:
    url, _ = await event_stream(aiohttp_server, [b"data: 1\n\n"], hold=True)
    async with HttpClient() as client:
        resp = await client.request("POST", f"{url}/chat/completions", headers={})
        events = iter_sse(resp, chunk_timeout_s=0.05)
        assert await anext(events) == SseEvent("", b"1")
        with pytest.raises(UpstreamFailure, match="no stream data"):
            await anext(events)


class _Pieces:
    """A body that hands over the given pieces, one per read."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = list(pieces)

    async def readany(self, timeout_s: float | None = None) -> bytes:
        return self.pieces.pop(0) if self.pieces else b""


async def _events(pieces: list[bytes]) -> list[SseEvent]:
    return [e async for e in iter_sse(_Pieces(pieces), chunk_timeout_s=5)]


TRICKY_STREAMS = [
    b"data: {\"a\": 1}\n\ndata: {\"b\": 2}\n\ndata: [DONE]\n\n",
    b"event: message_start\ndata: {}\n\ndata: plain\n\n",
    b"data: one\ndata: two\n\n: a comment\n\ndata:no-space\n\n",
    b"data: x\n\n\n\ndata:  two spaces\n\n\ndata: y\n\n",
    b"data: crlf\r\n\r\ndata: z\n\n",
    b"id: 7\ndata: with id\n\nretry: 10\n\ndata: tail without its blank line",
]


@pytest.mark.parametrize("stream", TRICKY_STREAMS)
async def test_whole_events_read_at_once_parse_as_byte_by_byte(stream: bytes) -> None:
    # A read of whole events takes a shortcut for one-line ``data:`` events; byte by byte
    # never can. Both must give the same events, whatever else the stream holds.
    at_once = await _events([stream])
    assert at_once == await _events([stream[i:i + 1] for i in range(len(stream))])
    assert at_once  # every stream above holds events


async def test_events_after_a_read_that_ends_mid_event_are_whole() -> None:
    pieces = [b"data: {\"a\"", b": 1}\n\ndata: next\n\n", b"event: e\n", b"data: 3\n\n"]
    assert await _events(pieces) == [
        SseEvent("", b'{"a": 1}'), SseEvent("", b"next"), SseEvent("e", b"3")]


async def test_a_byte_order_mark_opening_the_stream_is_not_part_of_its_first_event() -> None:
    bom = "\ufeff".encode()
    assert await _events([bom + b"data: first\n\n", b"data: " + bom + b"kept\n\n"]) == [
        SseEvent("", b"first"), SseEvent("", bom + b"kept")]


MIB = b"a" * (1 << 20)


@pytest.mark.parametrize(("start", "piece"), [
    (b"data: ", MIB),  # one line that never ends
    (b": a comment\n", b"data: " + MIB + b"\n"),  # data lines and no blank line to end them
], ids=["endless line", "endless event"])
async def test_an_event_past_the_size_limit_is_a_bad_response_not_a_growing_buffer(
    start: bytes, piece: bytes
) -> None:
    pieces = [b"data: 1\n\n", start] + [piece] * (MAX_EVENT_BYTES // len(piece) + 2)
    events = iter_sse(_Pieces(pieces), chunk_timeout_s=5)
    assert await anext(events) == SseEvent("", b"1")
    with pytest.raises(UpstreamFailure, match="event larger than") as caught:
        await anext(events)
    assert caught.value.kind is FailureKind.BAD_RESPONSE


async def test_an_event_just_under_the_size_limit_is_read_whole() -> None:
    size = MAX_EVENT_BYTES - 100
    pieces = [b"data: " + b"b" * (size - 1000), b"b" * 1000 + b"\n\n"]
    assert await _events(pieces) == [SseEvent("", b"b" * size)]
