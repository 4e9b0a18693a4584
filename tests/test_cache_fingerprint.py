"""gateway/cache/fingerprint.py: what must match for a hit, and the text compared by meaning."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.cache.fingerprint import cache_text, exact_key, fingerprint, loose_key, normalize_text
from gateway.core.chat import ChatRequest, parse_chat_request


def _request(**fields: Any) -> ChatRequest:
    body = {"model": "auto", "messages": [{"role": "user", "content": "What is DNS?"}], **fields}
    return parse_chat_request(orjson.dumps(body))


BASE = fingerprint(_request(), "auto")


@pytest.mark.parametrize("change", [
    {"messages": [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "What is DNS?"}]},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                  {"role": "user", "content": "What is DNS?"}]},
    {"temperature": 0.7}, {"top_p": 0.5}, {"n": 2}, {"seed": 7}, {"max_tokens": 10},
    {"stop": ["\n"]}, {"response_format": {"type": "json_object"}},
    {"tools": [{"type": "function", "function": {"name": "lookup"}}]},
    {"tool_choice": "required"}, {"logit_bias": {"50256": -100}}, {"frequency_penalty": 1.0},
])
def test_context_changes_change_the_fingerprint(change: dict[str, Any]) -> None:
    assert fingerprint(_request(**change), "auto") != BASE


def test_target_is_part_of_the_fingerprint() -> None:
    assert fingerprint(_request(), "code") != BASE


@pytest.mark.parametrize("change", [{"stream": True}, {"user": "u-1"},
                                    {"metadata": {"k": "v"}}, {"store": True}])
def test_transport_fields_do_not_change_the_fingerprint(change: dict[str, Any]) -> None:
    assert fingerprint(_request(**change), "auto") == BASE


def test_only_the_last_user_turn_is_the_text() -> None:
    other = _request(messages=[{"role": "user", "content": "  What is  DNS?\r\n"}])
    assert fingerprint(other, "auto") == BASE
    assert cache_text(other) == "What is  DNS?"


def test_a_conversation_ending_in_a_tool_result_can_only_hit_exactly() -> None:
    request = _request(messages=[
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                                                               "function": {"name": "w"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ])
    assert cache_text(request) == ""
    changed = _request(messages=[*request.body["messages"][:2],
                                 {"role": "tool", "tool_call_id": "c1", "content": "rain"}])
    assert fingerprint(request, "auto") != fingerprint(changed, "auto")


def test_images_in_the_last_turn_are_context() -> None:
    def with_image(url: str) -> ChatRequest:
        return _request(messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": url}}]}])
    assert cache_text(with_image("a")) == "What is this?"
    assert fingerprint(with_image("a"), "auto") != fingerprint(with_image("b"), "auto")


def test_exact_keys_keep_case_and_loose_keys_do_not() -> None:
    assert exact_key("ns", "fp", "What is DNS?") != exact_key("ns", "fp", "what is dns")
    assert loose_key("ns", "fp", "What is DNS?") == loose_key("ns", "fp", "what is dns")
    assert loose_key("ns", "fp", "C++?") != loose_key("ns", "fp", "C#?")
    assert loose_key("ns", "fp", "Is 3.5 > 2?") != loose_key("ns", "fp", "Is 35 > 2?")
    assert normalize_text("a\r\nb  \n") == "a\nb"
