"""gateway/cache/replay.py: a hit replayed as chunks, a finished stream assembled for storing."""

from __future__ import annotations

from typing import Any

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
