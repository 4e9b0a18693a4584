"""Tests for gateway/upstream/providers/openai.py: which reads of a stream are plain.

A plain read may be relayed as the bytes it came in; for it, ``plain_chunks`` must give exactly
the chunks the adapter's parser would (``_Chunks.event`` over ``EventParser.read``), and every
read holding something the gateway acts on, or that a client's event parser could read
otherwise than ours, must not be plain.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.core.errors import UpstreamFailure
from gateway.upstream.providers.openai import _Chunks, plain_chunks
from gateway.upstream.sse import EventParser


def chunk(content: str | None = "hi", finish: str | None = None, **extra: Any) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up",
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish}], **extra}


def ev(payload: Any, compact: bool = True) -> bytes:
    separators = (",", ":") if compact else (", ", ": ")
    return b"data: " + json.dumps(payload, separators=separators).encode() + b"\n\n"


def parsed(data: bytes) -> list[Any]:
    decoder, chunks = _Chunks(), []
    for event in EventParser().read(data):
        chunks.extend(decoder.event(event) or ())
    return chunks


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


PLAIN = {
    "one event": ev(chunk()),
    "spaced JSON": ev(chunk(), compact=False),
    "three events": ev(chunk("a")) + ev(chunk("b")) + ev(chunk("c")),
    "null usage, as OpenAI sends when usage is asked": ev(chunk(usage=None)),
    "non-ASCII text, raw and escaped": ev(chunk("é😀")) + b'data: {"choices": [{"delta": '
                                         b'{"content": "\\u00e9\\ud83d\\ude00"}}]}\n\n',
    "a tool call's arguments": ev(chunk(None) | {"choices": [{"index": 0, "delta": {
        "tool_calls": [{"index": 0, "function": {"arguments": '{"a": 1'}}]}}]}),
    "an error key inside the text": ev(chunk('"error": {}')),
}

NOT_PLAIN = {
    "the end marker": ev(chunk()) + b"data: [DONE]\n\n",
    "usage": ev(chunk(None, usage={"prompt_tokens": 1, "completion_tokens": 2})),
    "an error": ev({"error": {"message": "overloaded"}}),
    "a null error key": ev(chunk(error=None)),
    "a finish": ev(chunk("a")) + ev(chunk(None, "stop")),
    "half an event": ev(chunk())[:-9],
    "an event without its blank line": ev(chunk())[:-1],
    "CRLF line ends": ev(chunk()).replace(b"\n", b"\r\n"),
    "a carriage return inside the JSON": ev(chunk()).replace(b',"created"', b',\r"created"'),
    "a comment": b": keep-alive\n\n" + ev(chunk()),
    "an event field": b"event: delta\n" + ev(chunk()),
    "data over two lines": b'data: {"choices":\ndata: []}\n\n',
    "no space after the colon": ev(chunk()).replace(b"data: ", b"data:"),
    "two blank lines": ev(chunk()) + b"\n\n" + ev(chunk()),
    "not JSON": b"data: {oops}\n\n",
    "choices not a list": ev({"choices": {}}),
    "a choice not an object": ev({"choices": [None]}),
    "a delta not an object": ev({"choices": [{"delta": "hi"}]}),
    "JSON nested deeper than the gateway reads": ev(chunk(extra=nested(200))),
}


@pytest.mark.parametrize("data", PLAIN.values(), ids=PLAIN.keys())
def test_a_plain_read_gives_the_chunks_the_parser_gives(data: bytes) -> None:
    assert plain_chunks(data) == parsed(data)


@pytest.mark.parametrize("data", NOT_PLAIN.values(), ids=NOT_PLAIN.keys())
def test_a_read_the_gateway_must_act_on_or_could_misread_is_not_plain(data: bytes) -> None:
    assert plain_chunks(data) is None


@pytest.mark.parametrize("choices", [{}, {"choices": None}], ids=["absent", "null"])
def test_a_usage_chunk_without_choices_is_read_as_one_with_none(choices: dict[str, Any]) -> None:
    # Some OpenAI-compatible servers end a stream's usage this way; OpenAI sends "choices": [].
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    data = ev(chunk("a")) + ev({"id": "c1", "model": "up", "usage": usage, **choices})
    assert parsed(data)[1] == {"id": "c1", "model": "up", "usage": usage, "choices": []}


def test_a_chunk_without_choices_or_usage_is_still_refused() -> None:
    with pytest.raises(UpstreamFailure):
        parsed(ev({"id": "c1", "model": "up"}))
