"""Token counts as providers report them: only sane integers reach the ledger."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.answer import Usage, reported_usage, token_count, usage_from_openai
from gateway.upstream.providers.anthropic_answers import MessagesStream


@pytest.mark.parametrize(("value", "expected"), [
    (0, 0), (12, 12), (1 << 40, 1 << 40),
    (-1, None), ((1 << 40) + 1, None), (2**63, None), (True, None), (1.5, None), ("7", None),
    (None, None),
])
def test_a_token_count_is_an_integer_within_reason(value: Any, expected: int | None) -> None:
    assert token_count(value) == expected


@pytest.mark.parametrize(("usage", "expected"), [
    ({"prompt_tokens": 9, "completion_tokens": 2,
      "prompt_tokens_details": {"cached_tokens": 4}}, Usage(9, 2, 4)),
    ({"prompt_tokens": 9, "completion_tokens": 2,
      "prompt_tokens_details": {"cached_tokens": 2**64}}, Usage(9, 2, 0)),
    ({"prompt_tokens": 2**63, "completion_tokens": 2}, None),
    # Parts larger than their whole are cut to it: a negative fresh prompt would price an
    # answer below zero, and Anthropic's clients would read negative input tokens.
    ({"prompt_tokens": 9, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 50},
      "completion_tokens_details": {"reasoning_tokens": 7}}, Usage(9, 2, 9, reasoning_tokens=2)),
    # Cache writes are a third class of prompt tokens: what reads leave of the prompt, at most.
    ({"prompt_tokens": 9, "completion_tokens": 2,
      "prompt_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 3}},
     Usage(9, 2, 4, cache_write_tokens=3)),
    ({"prompt_tokens": 9, "completion_tokens": 2,
      "prompt_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 8}},
     Usage(9, 2, 4, cache_write_tokens=5)),
    # 1-hour writes are some of the writes (LiteLLM's split by lifetime), never more of them.
    ({"prompt_tokens": 9, "completion_tokens": 2, "prompt_tokens_details": {
        "cached_tokens": 4, "cache_write_tokens": 3, "cache_creation_token_details": {
            "ephemeral_5m_input_tokens": 1, "ephemeral_1h_input_tokens": 2}}},
     Usage(9, 2, 4, cache_write_tokens=3, cache_write_1h_tokens=2)),
    ({"prompt_tokens": 9, "completion_tokens": 2, "prompt_tokens_details": {
        "cached_tokens": 4, "cache_write_tokens": 3, "cache_creation_token_details": {
            "ephemeral_1h_input_tokens": 7}}},
     Usage(9, 2, 4, cache_write_tokens=3, cache_write_1h_tokens=3)),
    ({"prompt_tokens": 9, "completion_tokens": 2, "prompt_tokens_details": {
        "cache_write_tokens": 3, "cache_creation_token_details": [2]}},
     Usage(9, 2, 0, cache_write_tokens=3)),
    ({"prompt_tokens": -5, "completion_tokens": 2}, None),
    ({"prompt_tokens": False, "completion_tokens": 2}, None),
    ([], None),
])
def test_openai_usage_with_nonsense_counts_is_no_usage(usage: Any,
                                                       expected: Usage | None) -> None:
    assert usage_from_openai(usage) == expected


def test_reported_usage_keeps_its_parts_within_their_wholes() -> None:
    assert reported_usage(10, 4, cached=3, reasoning=1) == Usage(10, 4, 3, reasoning_tokens=1)
    assert reported_usage(10, 4, cached=30, reasoning=9) == Usage(10, 4, 10, reasoning_tokens=4)
    assert reported_usage(10, 4, cached=3, reasoning=0, written=9) == Usage(
        10, 4, 3, cache_write_tokens=7)


def test_cache_writes_survive_openais_shape_and_escalation_adds_them() -> None:
    usage = Usage(1150, 10, 1000, cache_write_tokens=50)
    assert usage_from_openai(usage.as_openai()) == usage
    assert usage.plus(usage).cache_write_tokens == 100


def test_hour_long_cache_writes_survive_openais_shape_and_escalation_adds_them() -> None:
    usage = Usage(1350, 10, 1000, cache_write_tokens=250, cache_write_1h_tokens=200)
    assert usage.as_openai()["prompt_tokens_details"]["cache_creation_token_details"] == {
        "ephemeral_5m_input_tokens": 50, "ephemeral_1h_input_tokens": 200}
    assert usage_from_openai(usage.as_openai()) == usage
    assert usage.plus(usage).cache_write_1h_tokens == 400


def test_a_message_delta_s_null_counts_leave_message_start_s() -> None:
    stream = MessagesStream("c1", 0, "claude", json_mode=False)
    stream.feed({"type": "message_start", "message": {"model": "claude", "usage": {
        "input_tokens": 100, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 250,
        "cache_creation": {"ephemeral_5m_input_tokens": 50, "ephemeral_1h_input_tokens": 200},
        "output_tokens": 1}}})
    stream.feed({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {
        "input_tokens": None, "cache_read_input_tokens": None,
        "cache_creation_input_tokens": None, "cache_creation": None, "output_tokens": 10}})
    stream.feed({"type": "message_stop"})
    [closing] = stream.finish()
    assert usage_from_openai(closing["usage"]) == Usage(
        1350, 10, 1000, cache_write_tokens=250, cache_write_1h_tokens=200)
