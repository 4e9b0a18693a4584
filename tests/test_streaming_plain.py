"""Tests for gateway/pipeline/streaming.py: plain reads relayed as the bytes they came in.

A read of an OpenAI stream that holds only whole chunks the gateway need not act on (no usage,
no error, no finish: ``providers.openai.plain_chunks``) goes to the client as the upstream sent
it, one write for the read, instead of each chunk parsed and encoded again. The provider here
writes each piece only once the client has read what the one before produced (``Paced``), so
each piece is one read of the gateway's and the tests know which path it took: the fake writes
JSON with spaces after its separators, and a chunk the gateway encodes again comes out compact.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.pipeline.streaming import OpenAIChunks
from gateway.tenants.context import ADMISSION_KEY, LEDGER_KEY, STORE_KEY
from gateway.tenants.ledger import recent
from gateway.upstream.providers.openai import plain_chunks
from tests.conftest import GatewayFactory
from tests.test_streaming import BODY, event, gateway_on, text_of, usage_event

DONE = b"data: [DONE]\n\n"
HEAD = event({"role": "assistant", "content": ""}) + event({"content": "Counting:"})
"""The first read: failover pulls it before the relay begins."""


def compact_event(content: str | None, finish: str | None = None, *,
                  null_usage: bool = True, usage_first: bool = False) -> bytes:
    """A chunk as OpenAI writes one (compact JSON) when usage was asked for: ``"usage":null``
    last, or first with ``usage_first``."""
    delta = {} if content is None else {"content": content}
    chunk: dict[str, Any] = {
        "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    if null_usage:
        chunk = {"usage": None, **chunk} if usage_first else {**chunk, "usage": None}
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


MARK_WAIT_S = 10.0
"""How long the provider waits for the client to hold a piece's mark before it gives up."""
Piece = tuple[bytes | tuple[bytes, ...], bytes | None]
"""What the provider writes (several network writes, back to back, for a tuple) and the mark
the client must hold before the next piece (None: at once)."""


class Paced:
    """The client's view of one stream (its body, and the HTTP chunks it came in), and a
    provider that writes each piece only once the client holds that piece's mark."""

    def __init__(self, pieces: Sequence[Piece]) -> None:
        self.pieces = pieces
        self.body = b""
        self.http_chunks: list[bytes] = []
        self.grew = asyncio.Event()

    async def provider(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece, mark in self.pieces:
            for write in piece if isinstance(piece, tuple) else (piece,):
                await resp.write(write)  # each its own HTTP chunk
            try:
                async with asyncio.timeout(MARK_WAIT_S):
                    while mark is not None and mark not in self.body:
                        self.grew.clear()
                        await self.grew.wait()
            except TimeoutError:  # the gateway never passed it on: the stream stops short,
                return resp  # so the client's body tells what was lost
        return resp

    async def read(self, client: TestClient, **body: Any) -> bytes:
        resp = await client.post("/v1/chat/completions", json={**BODY, **body})
        assert resp.status == 200
        partial = b""
        async for data, whole in resp.content.iter_chunks():
            self.body += data
            partial += data
            if whole:
                self.http_chunks.append(partial)
                partial = b""
            self.grew.set()
        return self.body


WORDS = [f" w{i}" for i in range(6)]


def paced_words(events: Sequence[bytes], end: bytes) -> list[Piece]:
    """``HEAD``, then each of ``events`` (one for each of ``WORDS``) its own read, then ``end``."""
    marks = [json.dumps(w).encode() for w in WORDS]  # the quoted content: in either encoding
    return [(HEAD, b"Counting:"), *zip(events, marks, strict=True), (end, None)]


async def test_plain_reads_reach_the_client_as_the_upstream_sent_them(
    aiohttp_server: Any, make_gateway: GatewayFactory
) -> None:
    words = [event({"content": w}) for w in WORDS]
    paced = Paced(paced_words(words, event({}, "stop") + DONE))
    client = await gateway_on(aiohttp_server, make_gateway, paced.provider)
    body = await paced.read(client)
    assert text_of(body) == "Counting:" + "".join(WORDS)
    for word in words:
        assert word in body, "the upstream's own bytes"
    assert b'"finish_reason":"stop"' in body, "the finishing chunk was parsed and encoded"
    assert body.endswith(DONE)


@pytest.mark.parametrize("include_usage", [False, True], ids=["usage-not-asked", "usage-asked"])
async def test_a_null_usage_goes_to_the_client_only_when_it_asked_for_usage(
    aiohttp_server: Any, make_gateway: GatewayFactory, include_usage: bool
) -> None:
    words = [compact_event(w) for w in WORDS]
    end = compact_event(None, "stop") + usage_event(7, 21) + DONE
    paced = Paced(paced_words(words, end))
    client = await gateway_on(aiohttp_server, make_gateway, paced.provider)
    body = await paced.read(client, stream_options={"include_usage": include_usage})
    assert text_of(body) == "Counting:" + "".join(WORDS)
    for word in words:
        relayed = word if include_usage else word.replace(b',"usage":null', b"")
        assert relayed in body
    assert (b'"completion_tokens":21' in body) is include_usage  # parsed: compact
    assert (b'"usage"' in body) is include_usage
    app = client.server.app
    await app[LEDGER_KEY].flush()
    [row] = await recent(app[STORE_KEY])
    assert (row.tokens_in, row.tokens_out, row.estimated) == (7, 21, False)


async def test_a_null_usage_that_cannot_be_cut_from_the_bytes_is_encoded_again_without_it(
    aiohttp_server: Any, make_gateway: GatewayFactory
) -> None:
    words = [compact_event(w, usage_first=True) for w in WORDS]
    paced = Paced(paced_words(words, compact_event(None, "stop") + DONE))
    client = await gateway_on(aiohttp_server, make_gateway, paced.provider)
    body = await paced.read(client)
    assert text_of(body) == "Counting:" + "".join(WORDS)
    assert b'"usage"' not in body


async def test_an_event_cut_across_reads_is_parsed_and_the_text_counted_in_order(
    aiohttp_server: Any, make_gateway: GatewayFactory
) -> None:
    cut = event({"content": " b"})
    pieces = [
        (HEAD, b"Counting:"),
        (event({"content": " a"}) + cut[:25], b'" a"'),  # the gateway holds half of " b"
        (cut[25:], b'" b"'),
        (event({"content": " c"}), b'" c"'),  # a whole read again: relayed as it came
        (event({}, "stop") + DONE, None),  # no usage: the gateway counts the text itself
    ]
    paced = Paced(pieces)
    client = await gateway_on(aiohttp_server, make_gateway, paced.provider)
    body = await paced.read(client)
    assert text_of(body) == "Counting: a b c"
    assert b'"content":" b"' in body, "the event cut in two was parsed and encoded again"
    assert event({"content": " c"}) in body
    app = client.server.app
    await app[LEDGER_KEY].flush()
    [row] = await recent(app[STORE_KEY])
    assert row.estimated
    assert row.tokens_out == app[ADMISSION_KEY].tokens.count("Counting: a b c")


async def test_events_of_one_read_go_out_in_one_write_though_each_came_in_its_own_http_chunk(
    aiohttp_server: Any, make_gateway: GatewayFactory
) -> None:
    words = tuple(event({"content": w}) for w in (" a", " b", " c"))
    pieces: list[Piece] = [
        (HEAD, b"Counting:"),
        (words, b'" c"'),  # three writes in one go: the gateway reads them at once
        (event({}, "stop") + DONE, None),
    ]
    paced = Paced(pieces)
    client = await gateway_on(aiohttp_server, make_gateway, paced.provider)
    await paced.read(client)
    assert b"".join(words) in paced.http_chunks, "one HTTP chunk, the upstream's own bytes"


def openai_chunk(*choices: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
            "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_1",
            "choices": list(choices), **extra, "usage": None}


def choice(delta: dict[str, Any], index: int = 0, **extra: Any) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": None, **extra}


def wire(chunk: dict[str, Any], *, compact: bool = True, ascii_only: bool = False) -> bytes:
    separators = (",", ":") if compact else (", ", ": ")
    text = json.dumps(chunk, separators=separators, ensure_ascii=ascii_only)
    return b"data: " + text.encode() + b"\n\n"


TOKEN = {"token": " hé", "logprob": -0.000123456789, "bytes": [32, 104, 195, 169],
         "top_logprobs": [{"token": " he", "logprob": -9.5, "bytes": [32, 104, 101]}]}
DIFFERENTIAL = {
    "text, compact": wire(openai_chunk(choice({"content": " a"}))),
    "text, spaced": wire(openai_chunk(choice({"content": " a"})), compact=False),
    "the role's first chunk": wire(openai_chunk(choice({"role": "assistant", "content": "",
                                                        "refusal": None}))),
    "non-ASCII raw": wire(openai_chunk(choice({"content": "é😀 ünï"}))),
    "non-ASCII escaped": wire(openai_chunk(choice({"content": "é😀 ünï"})), ascii_only=True),
    "text that says usage": wire(openai_chunk(choice({"content": '"usage":null, usage'}))),
    "a tool call's start": wire(openai_chunk(choice({"tool_calls": [{
        "index": 0, "id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": ""}}]}))),
    "a tool call's arguments": wire(openai_chunk(choice({"tool_calls": [{
        "index": 0, "function": {"arguments": '{"city": "Z\\u00fcrich"'}}]}))),
    "a refusal delta": wire(openai_chunk(choice({"refusal": "I can't help"}))),
    "logprobs": wire(openai_chunk(choice({"content": " hé"},
                                         logprobs={"content": [TOKEN], "refusal": None}))),
    "n=2, the second choice": wire(openai_chunk(choice({"content": " b"}, index=1))),
    "Azure's prompt filter results, choices empty": wire(openai_chunk(
        prompt_filter_results=[{"prompt_index": 0, "content_filter_results": {
            "hate": {"filtered": False, "severity": "safe"}}}])),
    "Azure's content filter results on a choice": wire(openai_chunk(choice(
        {"content": " a"}, content_filter_results={"hate": {"filtered": False}}))),
    "a provider's own field holding a null usage": wire(openai_chunk(
        choice({"content": " a"}), x_groq={"id": "req_1", "usage": None})),
    "usage first": b'data: {"usage":null,"id":"c","choices":[{"index":0,"delta":'
                   b'{"content":" a"}}]}\n\n',
    "no usage key": wire({k: v for k, v in openai_chunk(choice({"content": " a"})).items()
                          if k != "usage"}),
    "obfuscation padding": wire(openai_chunk(choice({"content": " a"}), obfuscation="x7Yq")),
}


def client_events(data: bytes) -> list[Any]:
    """What a client's event parser reads: each event's JSON."""
    return [json.loads(block[len(b"data:"):]) for block in data.split(b"\n\n") if block]


@pytest.mark.parametrize("include_usage", [False, True], ids=["usage-not-asked", "usage-asked"])
@pytest.mark.parametrize("chunks", [[d] for d in DIFFERENTIAL.values()] + [
    list(DIFFERENTIAL.values())], ids=[*DIFFERENTIAL.keys(), "all in one read"])
def test_a_plain_read_reaches_the_client_as_the_parsed_path_would_write_it(
    chunks: list[bytes], include_usage: bool
) -> None:
    data = b"".join(chunks)
    relayed = plain_chunks(data)
    assert relayed is not None, "the read is plain: it takes the pass-through"
    parsed = [orjson.loads(block[6:]) for block in data[:-2].split(b"\n\n")]
    writer = OpenAIChunks(include_usage)
    assert client_events(writer.events(data, relayed)) == client_events(
        b"".join(writer.chunk(c) for c in parsed))


async def test_a_chunk_with_no_choices_and_a_null_usage_reaches_the_client_either_way(
    aiohttp_server: Any, make_gateway: GatewayFactory
) -> None:
    # Azure's first chunk: its prompt filter results, no choices; usage was asked upstream.
    filtered = DIFFERENTIAL["Azure's prompt filter results, choices empty"]
    pieces: list[Piece] = [
        (filtered + HEAD, b"Counting:"),  # failover's head: parsed and encoded again
        (filtered, b'"prompt_filter_results"'),  # a plain read: relayed as it came
        (event({"content": " a"}), b'" a"'),
        (event({}, "stop") + DONE, None),
    ]
    paced = Paced(pieces)
    client = await gateway_on(aiohttp_server, make_gateway, paced.provider)
    body = await paced.read(client)
    seen = [e for e in client_events(body[:-len(DONE)]) if "prompt_filter_results" in e]
    assert len(seen) == 2
    assert all("usage" not in e and e["choices"] == [] for e in seen)
    assert text_of(body) == "Counting: a"


async def test_chunks_read_together_with_an_error_event_reach_the_client_before_the_error(
    aiohttp_server: Any, make_gateway: GatewayFactory
) -> None:
    error = b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'
    pieces: list[Piece] = [
        (HEAD, b"Counting:"),
        (event({"content": " a"}), b'" a"'),  # plain: relayed as it came
        (event({"content": " b"}) + event({"content": " c"}) + error, None),  # one read
    ]
    paced = Paced(pieces)
    client = await gateway_on(aiohttp_server, make_gateway, paced.provider)
    body = await paced.read(client)
    *answer, last = client_events(body)
    assert "".join(c["delta"].get("content", "") for e in answer for c in e["choices"]) == (
        "Counting: a b c")
    assert last["error"]["code"] == "stream_interrupted"
    assert b"[DONE]" not in body


def spaced_and_numbered() -> list[bytes]:
    """``DIFFERENTIAL``'s chunks as spaced JSON (a re-encoded chunk would come out compact),
    each with its own id: the mark the client must hold before the provider writes on."""
    out = []
    for i, data in enumerate(DIFFERENTIAL.values()):
        chunk = json.loads(data[6:])
        chunk["id"] = f"chatcmpl-{i:02d}"
        out.append(b"data: " + json.dumps(chunk, ensure_ascii=i % 2 == 0).encode() + b"\n\n")
    return out


def split_ways(chunks: list[bytes], cut: bool) -> list[Piece]:
    """Each chunk its own read, or (``cut``) each cut in two, its halves in different reads."""
    marks = [b'"chatcmpl-%02d"' % i for i in range(len(chunks))]
    end = event({}, "stop") + DONE
    if not cut:
        return [(HEAD, b"Counting:"), *zip(chunks, marks, strict=True), (end, None)]
    halves = [(c[:len(c) // 2], c[len(c) // 2:]) for c in chunks]
    pieces: list[Piece] = [(HEAD + halves[0][0], b"Counting:")]
    for i, mark in enumerate(marks):
        nxt = halves[i + 1][0] if i + 1 < len(halves) else end
        pieces.append((halves[i][1] + nxt, mark))
    return pieces


@pytest.mark.parametrize("include_usage", [False, True], ids=["usage-not-asked", "usage-asked"])
async def test_a_client_reads_the_same_events_whether_reads_were_relayed_as_bytes_or_parsed(
    aiohttp_server: Any, make_gateway: GatewayFactory, include_usage: bool
) -> None:
    chunks = spaced_and_numbered()
    bodies = []
    for cut in (False, True):
        paced = Paced(split_ways(chunks, cut))
        client = await gateway_on(aiohttp_server, make_gateway, paced.provider)
        bodies.append(await paced.read(client, stream_options={"include_usage": include_usage}))
    relayed, parsed = bodies
    # Which path each took: the upstream's spaced bytes only where relayed. A null usage not
    # asked for is cut from them, unless it cannot be cut alone: then the chunk is re-encoded.
    encoded_again = {"usage first", "a provider's own field holding a null usage"}
    for name, data in zip(DIFFERENTIAL, chunks, strict=True):
        cut_usage = data if include_usage else data.replace(b', "usage": null', b"")
        as_bytes = include_usage or name not in encoded_again
        assert (cut_usage in relayed, data in parsed) == (as_bytes, False), name
    assert relayed.endswith(DONE) and parsed.endswith(DONE)
    assert client_events(relayed.removesuffix(DONE)) == client_events(parsed.removesuffix(DONE))
