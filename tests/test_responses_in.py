"""Tests for gateway/api/responses_in.py: Responses API bodies as chat requests."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.api.responses_in import responses_request
from gateway.core.errors import InvalidRequest

Json = dict[str, Any]


def translate(history: tuple[Json, ...] = (), **body: Any) -> Json:
    body.setdefault("model", "m")
    body.setdefault("input", "hi")
    return dict(responses_request(body, history).chat.body)


def test_function_calls_join_their_assistant_turn_and_outputs_become_tool_messages() -> None:
    body = translate(input=[
        {"role": "user", "content": "list and count"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "On it."}]},
        {"type": "function_call", "call_id": "c1", "name": "ls", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "wc", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "a b"},
        {"type": "function_call_output", "call_id": "c2",
         "output": [{"type": "input_text", "text": "2"}]},
    ])
    assistant = body["messages"][1]
    assert assistant["content"] == "On it."
    assert [c["id"] for c in assistant["tool_calls"]] == ["c1", "c2"]
    assert body["messages"][2:] == [{"role": "tool", "tool_call_id": "c1", "content": "a b"},
                                    {"role": "tool", "tool_call_id": "c2", "content": "2"}]


def test_instructions_lead_but_are_not_part_of_the_kept_conversation() -> None:
    history = ({"role": "user", "content": "earlier"},
               {"role": "assistant", "content": "answer"})
    translated = responses_request({"model": "m", "input": "now", "instructions": "Be terse."},
                                   history)
    sent = translated.chat.body["messages"]
    assert sent[0] == {"role": "system", "content": "Be terse."}
    assert [m["content"] for m in sent[1:]] == ["earlier", "answer", "now"]
    assert [m["content"] for m in translated.messages] == ["earlier", "answer", "now"]


def test_text_format_and_limits_map_to_chat_fields() -> None:
    body = translate(text={"format": {"type": "json_schema", "name": "n",
                                      "schema": {"type": "object"}, "strict": True}},
                     max_output_tokens=9, tool_choice={"type": "function", "name": "f"},
                     tools=[{"type": "function", "name": "f"}])
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "n", "schema": {"type": "object"}, "strict": True}}
    assert body["max_completion_tokens"] == 9
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}


@pytest.mark.parametrize(("body", "param"), [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["v"]}]}, "tools[0].type"),
    ({"tools": [{"type": "computer_use_preview"}]}, "tools[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input[0].content[0]"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
    ({"background": True}, "background"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"text": {"format": {"type": "yaml"}}}, "text.format.type"),
])
def test_what_cannot_be_carried_is_refused_naming_the_field(body: Json, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        translate(**body)
    assert caught.value.param == param
