"""Tests for gateway/api/call_ids.py: thought signatures folded into ids and back."""

from __future__ import annotations

import re

from gateway.api.call_ids import outward_id, unfold


def test_a_signed_call_id_unfolds_to_the_same_call_and_plain_result_id() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"},
            "extra_content": {"google": {"thought_signature": "a+b/c==\u00e9"}}}
    folded = outward_id(call)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", folded), "fits Anthropic's tool_use id pattern"
    messages = unfold([
        {"role": "assistant", "content": None, "tool_calls": [{**call, "id": folded,
                                                               "extra_content": None}]},
        {"role": "tool", "tool_call_id": folded, "content": "ok"},
    ])
    assert messages[0]["tool_calls"][0] == call
    assert messages[1]["tool_call_id"] == "call_1"


def test_unsigned_and_foreign_ids_are_left_as_they_are() -> None:
    assert outward_id({"id": "toolu_9"}) == "toolu_9"
    odd = "call__gsig_!!not-base64!!"
    messages = unfold([{"role": "assistant", "tool_calls": [{"id": odd}]},
                       {"role": "tool", "tool_call_id": "toolu_9", "content": ""}])
    assert messages[0]["tool_calls"][0] == {"id": odd}
    assert messages[1]["tool_call_id"] == "toolu_9"
