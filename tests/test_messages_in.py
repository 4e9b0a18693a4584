"""Tests for gateway/api/messages_in.py: Anthropic Messages bodies as chat requests."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.api.messages_in import messages_request
from gateway.core.errors import FailureKind, InvalidRequest, UpstreamFailure
from gateway.upstream.providers.base import refuse_native_only

Json = dict[str, Any]


def translate(**body: Any) -> Json:
    body.setdefault("model", "m")
    body.setdefault("max_tokens", 16)
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return dict(messages_request(body, {"anthropic-beta": "b1"}).body)


def refused(**body: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        translate(**body)
    return caught.value


def test_tool_results_come_before_the_rest_of_their_user_turn() -> None:
    body = translate(messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "t", "signature": "s"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [
            {"type": "text", "text": "also this"},
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]},
    ])
    assert body["messages"][1:] == [
        {"role": "assistant", "content": "Checking.", "tool_calls": [{
            "id": "toolu_1", "type": "function",
            "function": {"name": "w", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "user", "content": "also this"},
    ]


def test_system_blocks_images_and_documents_become_chat_parts() -> None:
    body = translate(system=[{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
                     messages=[{"role": "user", "content": [
                         {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                      "data": "AAAA"}},
                         {"type": "document", "source": {"type": "base64",
                                                         "media_type": "application/pdf",
                                                         "data": "JVBE"}},
                         {"type": "text", "text": "what are these?"}]}])
    assert body["messages"][0] == {"role": "system", "content": "A\n\nB"}
    parts = body["messages"][1]["content"]
    assert parts[0] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    assert parts[1]["file"]["file_data"] == "data:application/pdf;base64,JVBE"


def test_tool_choice_and_options_map_one_to_one() -> None:
    body = translate(tools=[{"name": "w", "input_schema": {"type": "object"}}],
                     tool_choice={"type": "any", "disable_parallel_tool_use": True},
                     stop_sequences=["X"], temperature=0.5, top_k=3,
                     metadata={"user_id": "u"})
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False
    assert (body["stop"], body["temperature"], body["user"]) == (["X"], 0.5, "u")
    assert "top_k" not in body, "top_k only reaches Anthropic, in the native body"


def test_the_native_body_and_headers_are_kept_for_anthropic() -> None:
    sent = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}],
            "top_k": 2}
    native = messages_request(sent, {"anthropic-beta": "b1", "x-other": "no"}).native
    assert native is not None and native.body is sent
    assert dict(native.headers) == {"anthropic-beta": "b1"}


@pytest.mark.parametrize(("body", "param"), [
    ({"max_tokens": 0}, "max_tokens"),
    ({"temperature": 1.5}, "temperature"),
    ({"stop_sequences": "X"}, "stop_sequences"),
    ({"messages": [{"role": "system", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/png"}}]}]}, "messages.0.content.0.source.data"),
])
def test_malformed_bodies_are_refused_naming_the_field(body: Json, param: str) -> None:
    assert refused(**body).param == param


@pytest.mark.parametrize(("body", "param"), [
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
    ({"tools": [{"type": "computer_20250124", "name": "computer"}]}, "tools[0].type"),
    ({"mcp_servers": [{"type": "url", "url": "https://x"}]}, "mcp_servers"),
    ({"container": "c1"}, "container"),
    ({"messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "file", "file_id": "f1"}}]}]},
     "messages[0].content[0].source.type"),
    ({"messages": [{"role": "assistant", "content": [
        {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "w", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                      "content": [{"type": "image", "source": {}}]}]}]},
     "messages[2].content[0].content[0]"),
])
def test_what_only_anthropic_can_carry_marks_the_request_native_only(
    body: Json, param: str
) -> None:
    body = {"model": "m", "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}], **body}
    request = messages_request(body, {})
    assert request.native is not None and request.native.only == (param,)
    assert request.body["x_gateway_native_body"] is body, "the cache key covers all of it"
    with pytest.raises(UpstreamFailure) as caught:
        refuse_native_only(request)
    assert caught.value.kind is FailureKind.UNSUPPORTED and param in caught.value.message


@pytest.mark.parametrize("value", ["é€", "2023-06-01\u00a0", "beta\u200b"])
@pytest.mark.parametrize("name", ["anthropic-version", "anthropic-beta"])
def test_a_passed_header_that_is_not_printable_ascii_is_400_naming_it(name: str,
                                                                      value: str) -> None:
    # It was sent on to the provider, whose HTTP client refused it: a connection failure
    # counted against the deployment's health, and a 500 to the client.
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(InvalidRequest) as caught:
        messages_request(body, {name: value})
    assert caught.value.param == name and name in caught.value.message
