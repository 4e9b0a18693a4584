"""gateway/cache/replay.py: a hit replayed as chunks, a finished stream assembled for storing."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.cache.replay import (
    ZERO_USAGE,
    assemble_chunks,
    replay_body,
    replay_chunks,
    uncacheable,
)
from tests.cache_fixtures import answer

CALL = {"id": "call_1", "type": "function",
        "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}


def _content(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


def test_replayed_stream_has_role_content_and_finish_chunks() -> None:
    text = "A fairly long answer that will be split into several word-aligned pieces. " * 3
    chunks = replay_chunks(answer(text), include_usage=False)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert _content(chunks) == text
    assert len(chunks) > 3
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                        "finish_reason": "stop"}
    assert all("usage" not in c for c in chunks)


def test_usage_chunk_reports_zero_tokens_for_a_hit() -> None:
    chunks = replay_chunks(answer("hi"), include_usage=True)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == ZERO_USAGE


def test_tool_calls_are_replayed_with_their_index() -> None:
    body = answer(content="", finish_reason="tool_calls", tool_calls=[CALL])
    chunks = replay_chunks(body, include_usage=False)
    calls = [c["choices"][0]["delta"]["tool_calls"] for c in chunks
             if "tool_calls" in c["choices"][0]["delta"]]
    assert calls == [[{"index": 0, **CALL}]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_replayed_stream_assembles_back_to_the_stored_answer() -> None:
    body = answer(content="Sunny, " * 20, finish_reason="tool_calls", tool_calls=[CALL])
    assembled = assemble_chunks(replay_chunks(body, include_usage=True))
    assert assembled is not None
    assert assembled["choices"][0]["message"]["content"] == body["choices"][0]["message"][
        "content"]
    assert assembled["choices"][0]["message"]["tool_calls"] == [CALL]
    assert uncacheable(assembled) is None


def test_a_stream_that_never_finished_is_not_assembled() -> None:
    chunks = replay_chunks(answer("unfinished"), include_usage=False)[:-1]
    assert assemble_chunks(chunks) is None
    assert assemble_chunks([]) is None


def test_replayed_body_is_fresh_and_free() -> None:
    body = answer("hi")
    replayed = replay_body(body)
    assert replayed["id"] != body["id"]
    assert replayed["usage"] == ZERO_USAGE
    assert replayed["choices"] == body["choices"]
    assert body["usage"]["total_tokens"] == 8


def test_a_stream_with_parts_of_the_wrong_type_assembles_without_them() -> None:
    """A provider's chunks are untrusted JSON: a tool call that is not an object, an index
    that is not a number, a delta that is null. Assembling them for the cache raised after
    the stream had been answered, and the error was written into the answer's body."""
    chunks: list[Any] = [
        {"id": "c", "model": "m", "choices": [{"index": "x", "delta": None}]},
        {"choices": [{"index": 0, "delta": {"content": 5, "tool_calls": [
            None, 7, {"index": "y", "id": 3, "function": None},
            {"index": 1, "id": "call_1", "function": {"name": "f", "arguments": 9}}]}}]},
        {"choices": [{"index": 0, "delta": {"content": "Hi", "tool_calls": True},
                      "finish_reason": "stop"}]},
        {"choices": [{"index": 1, "delta": {}, "finish_reason": "stop"}]},
    ]
    assembled = assemble_chunks(chunks)
    assert assembled is not None
    message = assembled["choices"][0]["message"]
    assert message["content"] == "Hi"
    assert [c.get("id") for c in message["tool_calls"]] == [None, "call_1"]


def test_a_stored_answer_with_parts_of_the_wrong_type_replays_without_them() -> None:
    """The stored answer is a provider's, untrusted: an index that is not a number or tool
    calls that are not objects raised while a cache hit was being answered."""
    body: Any = {"model": "m", "choices": [{"index": "x", "finish_reason": "stop", "message": {
        "role": 7, "content": "Hi", "refusal": 3, "tool_calls": [None, 5]}}]}
    chunks = replay_chunks(body, include_usage=False)
    assert {c["choices"][0]["index"] for c in chunks} == {0}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks
            if "tool_calls" in c["choices"][0]["delta"]] == [{"index": 0}, {"index": 1}]


@pytest.mark.parametrize("reason", [["stop"], {"": {}}, 5, None])
def test_an_answer_whose_finish_reason_is_not_a_string_is_not_cached(reason: Any) -> None:
    # A list here raised (unhashable) while the answer was being stored: a 500 (fuzz seed 14).
    body = {"object": "chat.completion", "choices": [
        {"index": 0, "finish_reason": reason, "message": {"role": "assistant", "content": "Hi"}}]}
    assert uncacheable(body) == f"finish_reason {reason!r}"


def test_a_stream_begun_by_a_chunk_without_choices_is_stored_under_its_answer_s_id_and_model(
) -> None:
    body = answer("Sunny.")
    # Azure's first chunk: its prompt filter results, and neither id nor model.
    filtered = {"id": "", "object": "", "created": 0, "model": "", "choices": [],
                "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}
    chunks = replay_chunks(body, include_usage=False)
    assembled = assemble_chunks([filtered, *chunks])
    assert assembled is not None
    assert (assembled["id"], assembled["model"], assembled["created"]) == (
        chunks[0]["id"], body["model"], chunks[0]["created"])
