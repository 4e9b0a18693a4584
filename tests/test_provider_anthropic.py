"""Tests of ``gateway/upstream/providers/anthropic.py`` against the in-process fake Messages API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pytest_aiohttp import AiohttpServer

from gateway.core.answer import Deployment, Json
from gateway.core.config import ModelSettings, ProviderSettings
from gateway.core.errors import FailureKind, InvalidRequest, UpstreamFailure
from gateway.upstream.calls import Upstream
from gateway.upstream.chunk_stream import ChunkStream
from gateway.upstream.http_client import HttpClient
from gateway.upstream.providers.anthropic import AnthropicProvider
from tests import fake_anthropic as fa
from tests import provider_harness
from tests.fake_anthropic import FakeAnthropic, fake_anthropic_app
from tests.provider_harness import Collected, chat, deltas

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather now",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}}


Harness = provider_harness.Harness[FakeAnthropic]


def deployment(base_url: str) -> Deployment:
    return Deployment(
        ModelSettings(name="smart", provider="anthropic", upstream_model="claude-fake",
                      tier="smart"),
        ProviderSettings(name="anthropic", kind="anthropic", base_url=base_url,
                         api_key="test-anthropic-key", headers={"anthropic-beta": "x-test"}),
    )


@pytest.fixture
async def anthropic(aiohttp_server: AiohttpServer) -> AsyncIterator[Harness]:
    fake = FakeAnthropic()
    server = await aiohttp_server(fake_anthropic_app(fake))
    async with HttpClient() as session:
        yield Harness(fake, AnthropicProvider(Upstream(session)), deployment(
            str(server.make_url("/v1"))
        ))


# --- request translation -------------------------------------------------------------------


async def test_request_carries_key_version_and_provider_headers(anthropic: Harness) -> None:
    await anthropic.complete()
    headers = anthropic.fake.requests[-1].headers
    assert headers["x-api-key"] == "test-anthropic-key"
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["anthropic-beta"] == "x-test"


async def test_defaults_fill_required_max_tokens(anthropic: Harness) -> None:
    await anthropic.complete()
    assert anthropic.sent() == {
        "model": "claude-fake", "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    }


async def test_system_messages_are_lifted_and_same_roles_merged(anthropic: Harness) -> None:
    await anthropic.complete(messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "user", "content": [{"type": "text", "text": "there"},
                                     {"type": "text", "text": ""}]},
        {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
        {"role": "assistant", "content": "Salut"},
    ])
    sent = anthropic.sent()
    assert sent["system"] == "Be brief.\n\nUse French."
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"},
                                     {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Salut"}]},
    ]


async def test_sampling_parameters_are_translated(anthropic: Harness) -> None:
    await anthropic.complete(max_tokens=99, temperature=1.7, top_p=0.5, stop=["END", "STOP"],
                             seed=3, user="user-42")
    sent = anthropic.sent()
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"]) == (99, 1.0, 0.5)
    assert sent["stop_sequences"] == ["END", "STOP"]
    assert sent["metadata"] == {"user_id": "user-42"}
    assert "seed" not in sent


async def test_n_above_one_is_unsupported(anthropic: Harness) -> None:
    failure = await anthropic.complete_fails(n=2)
    assert failure.kind is FailureKind.UNSUPPORTED
    assert "n=2" in failure.message
    assert anthropic.fake.requests == []


async def test_n_above_one_is_unsupported_when_streaming_too(anthropic: Harness) -> None:
    _, failure = await anthropic.stream_fails(n=3)
    assert failure.kind is FailureKind.UNSUPPORTED
    assert anthropic.fake.requests == []


async def test_legacy_function_role_is_unsupported(anthropic: Harness) -> None:
    failure = await anthropic.complete_fails(messages=[
        {"role": "user", "content": "Hi"},
        {"role": "function", "name": "get_weather", "content": "21C"},
    ])
    assert failure.kind is FailureKind.UNSUPPORTED
    assert "messages[1]" in failure.message


async def test_only_system_messages_are_unsupported(anthropic: Harness) -> None:
    failure = await anthropic.complete_fails(messages=[{"role": "system", "content": "Be brief."}])
    assert failure.kind is FailureKind.UNSUPPORTED
    assert anthropic.fake.requests == []


async def test_tools_and_choices_are_translated(anthropic: Harness) -> None:
    await anthropic.complete(tools=[WEATHER_TOOL], tool_choice="required",
                             parallel_tool_calls=False)
    sent = anthropic.sent()
    assert sent["tools"] == [{
        "name": "get_weather", "description": "Weather now",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }]
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", {"type": "auto"}),
    ("none", {"type": "none"}),
    ({"type": "function", "function": {"name": "get_weather"}},
     {"type": "tool", "name": "get_weather"}),
    (None, None),
])
async def test_tool_choice_forms(anthropic: Harness, choice: Any, expected: Any) -> None:
    await anthropic.complete(tools=[WEATHER_TOOL], tool_choice=choice)
    assert anthropic.sent().get("tool_choice") == expected


async def test_tool_history_becomes_tool_use_and_tool_result_blocks(anthropic: Harness) -> None:
    await anthropic.complete(messages=[
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call:2", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21C"},
        {"role": "tool", "tool_call_id": "call:2", "content": "sunny"},
        {"role": "user", "content": "Thanks"},
    ])
    assert anthropic.sent()["messages"][1:] == [
        {"role": "assistant", "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather",
             "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather",
             "input": {"city": "Rome"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "21C"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "sunny"},
            {"type": "text", "text": "Thanks"},
        ]},
    ]


async def test_images_become_image_blocks(anthropic: Harness) -> None:
    await anthropic.complete(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "text", "text": "Same cat?"},
    ]}])
    assert anthropic.sent()["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                     "data": "/9j/4AAQ"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "text", "text": "Same cat?"},
    ]


async def test_pdf_file_becomes_a_document_block(anthropic: Harness) -> None:
    await anthropic.complete(messages=[{"role": "user", "content": [
        {"type": "file", "file": {"filename": "a.pdf",
                                  "file_data": "data:application/pdf;base64,JVBERi0="}},
    ]}])
    assert anthropic.sent()["messages"][0]["content"] == [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                        "data": "JVBERi0="}},
    ]


@pytest.mark.parametrize("part", [
    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,SUkqAA=="}},
    {"type": "file", "file": {"file_data": "data:text/csv;base64,YSxi"}},
    {"type": "file", "file": {"file_id": "file-abc123"}},
], ids=["audio", "tiff-image", "csv-file", "file-by-id"])
async def test_parts_anthropic_cannot_express_are_unsupported(
    anthropic: Harness, part: Json
) -> None:
    failure = await anthropic.complete_fails(messages=[{"role": "user", "content": [part]}])
    assert failure.kind is FailureKind.UNSUPPORTED
    assert "messages[0].content[0]" in failure.message
    assert anthropic.fake.requests == []


@pytest.mark.parametrize(("part", "param"), [
    ({"type": "image_url", "image_url": {"url": "ftp://example.com/cat.png"}},
     "messages[0].content[0].image_url.url"),
    ({"type": "image_url", "image_url": None}, "messages[0].content[0].image_url.url"),
    ({"type": "file", "file": {"file_data": "JVBERi0="}}, "messages[0].content[0].file.file_data"),
], ids=["not-a-data-or-web-url", "no-url", "file-data-not-a-data-url"])
async def test_malformed_parts_are_invalid_requests(
    anthropic: Harness, part: Json, param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await anthropic.complete(messages=[{"role": "user", "content": [part]}])
    assert caught.value.param == param


async def test_tool_call_without_a_name_is_an_invalid_request(anthropic: Harness) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await anthropic.complete(messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"arguments": "{}"}}]},
        ])
    assert caught.value.param == "messages[1].tool_calls[0].function"


async def test_json_schema_is_enforced_with_a_forced_tool(anthropic: Harness) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}}
    anthropic.fake.script.append(fa.tool_use([("json_response", {"answer": 42})]))
    body = await anthropic.complete(response_format={
        "type": "json_schema", "json_schema": {"name": "reply", "schema": schema}
    })
    sent = anthropic.sent()
    assert sent["tools"][0]["name"] == "json_response"
    assert sent["tools"][0]["input_schema"] == schema
    assert sent["tool_choice"] == {"type": "tool", "name": "json_response"}
    choice = body["choices"][0]
    assert choice["message"]["content"] == '{"answer":42}'
    assert "tool_calls" not in choice["message"]
    assert choice["finish_reason"] == "stop"


async def test_json_mode_with_client_tools_is_unsupported(anthropic: Harness) -> None:
    failure = await anthropic.complete_fails(
        tools=[WEATHER_TOOL], response_format={"type": "json_object"}
    )
    assert failure.kind is FailureKind.UNSUPPORTED
    assert anthropic.fake.requests == []


# --- response translation ------------------------------------------------------------------


async def test_text_answer_becomes_chat_completion_with_usage(anthropic: Harness) -> None:
    anthropic.fake.script.append(fa.text("Bonjour !", use=fa.usage(
        10, 4, cache_read=20, cache_write=5
    )))
    body = await anthropic.complete()
    assert body["object"] == "chat.completion"
    assert body["model"] == "claude-fake-1"
    assert body["choices"] == [{
        "index": 0, "message": {"role": "assistant", "content": "Bonjour !", "refusal": None},
        "logprobs": None, "finish_reason": "stop",
    }]
    assert body["usage"] == {"prompt_tokens": 35, "completion_tokens": 4, "total_tokens": 39,
                             "prompt_tokens_details": {"cached_tokens": 20,
                                                       "cache_write_tokens": 5}}


@pytest.mark.parametrize(("reason", "expected"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
    ("refusal", "content_filter"),
])
async def test_stop_reasons_are_translated(anthropic: Harness, reason: str, expected: str) -> None:
    anthropic.fake.script.append(fa.text("x", stop_reason=reason))
    body = await anthropic.complete()
    assert body["choices"][0]["finish_reason"] == expected


async def test_tool_use_blocks_become_tool_calls(anthropic: Harness) -> None:
    anthropic.fake.script.append(fa.tool_use([("get_weather", {"city": "Paris"})],
                                             lead_text="Checking."))
    body = await anthropic.complete(tools=[WEATHER_TOOL])
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    assert choice["message"]["tool_calls"] == [{
        "id": "toolu_fake0", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }]


# --- streaming -----------------------------------------------------------------------------


async def test_stream_sends_role_text_finish_then_usage(anthropic: Harness) -> None:
    anthropic.fake.script.append(fa.text("Hello there world", use=fa.usage(12, 3)))
    chunks = await anthropic.stream()
    assert anthropic.sent()["stream"] is True
    assert deltas(chunks) == [
        {"role": "assistant", "content": ""},
        {"content": "Hello"}, {"content": " there"}, {"content": " world"}, {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * 4 + ["stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}


async def test_stream_tool_use_becomes_tool_call_deltas(anthropic: Harness) -> None:
    anthropic.fake.script.append(fa.tool_use(
        [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})], lead_text="Checking."
    ))
    chunks = await anthropic.stream(tools=[WEATHER_TOOL])
    got = deltas(chunks)
    assert got[1] == {"content": "Checking."}
    assert got[2] == {"tool_calls": [{"index": 0, "id": "toolu_fake0", "type": "function",
                                      "function": {"name": "get_weather", "arguments": ""}}]}
    arguments = {0: "", 1: ""}
    for delta in got[3:]:
        for call in delta.get("tool_calls", ()):
            arguments[call["index"]] += call["function"]["arguments"]
    assert arguments == {0: '{"city":"Paris"}', 1: '{"tz":"CET"}'}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_stream_in_json_mode_streams_the_json_as_content(anthropic: Harness) -> None:
    anthropic.fake.script.append(fa.tool_use([("json_response", {"answer": 42})]))
    chunks = await anthropic.stream(response_format={"type": "json_object"})
    got = deltas(chunks)
    assert "".join(d.get("content", "") for d in got) == '{"answer":42}'
    assert not any("tool_calls" in d for d in got)
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


# --- errors --------------------------------------------------------------------------------


async def test_429_carries_retry_after(anthropic: Harness) -> None:
    anthropic.fake.script.append(fa.failure(429, "rate_limit_error", "Slow down.",
                                            headers={"retry-after": "20"}))
    failure = await anthropic.complete_fails()
    assert failure.kind is FailureKind.RATE_LIMITED
    assert failure.retry_after_s == 20.0
    assert "Slow down." in failure.message


async def test_529_overloaded_is_retryable(anthropic: Harness) -> None:
    anthropic.fake.script.append(fa.failure(529, "overloaded_error", "Overloaded"))
    _, failure = await anthropic.stream_fails()
    assert failure.kind is FailureKind.SERVER_ERROR
    assert failure.retryable


async def test_500_is_a_server_error(anthropic: Harness) -> None:
    anthropic.fake.script.append(fa.failure(500, "api_error", "Internal server error"))
    failure = await anthropic.complete_fails()
    assert failure.kind is FailureKind.SERVER_ERROR


async def test_invalid_request_is_a_client_error(anthropic: Harness) -> None:
    anthropic.fake.script.append(fa.failure(400, "invalid_request_error", "messages: bad"))
    failure = await anthropic.complete_fails()
    assert failure.kind is FailureKind.CLIENT_ERROR
    assert not failure.retryable


async def test_error_in_200_body_is_a_failure(anthropic: Harness) -> None:
    anthropic.fake.script.append(fa.error_in_stream("api_error", "Oops"))
    failure = await anthropic.complete_fails()
    assert failure.kind is FailureKind.ERROR_IN_BODY


async def test_overloaded_error_event_mid_stream_is_a_retryable_failure(
    anthropic: Harness,
) -> None:
    anthropic.fake.script.append(fa.error_in_stream())
    stream = anthropic.provider.stream(chat(stream=True), anthropic.deployment)
    seen = [await anext(stream), await anext(stream)]
    assert deltas(seen) == [{"role": "assistant", "content": ""}, {"content": "partial"}]
    with pytest.raises(UpstreamFailure) as caught:
        await anext(stream)
    assert caught.value.kind is FailureKind.ERROR_IN_BODY
    assert caught.value.retryable
    assert caught.value.message == "overloaded_error: Overloaded"


async def test_stream_cut_mid_way_is_a_connection_failure(anthropic: Harness) -> None:
    anthropic.fake.script.append(fa.text("one two three four", cut_after=5))
    seen, failure = await anthropic.stream_fails()
    assert failure.kind is FailureKind.CONNECT
    assert deltas(seen)[1:] == [{"content": "one"}, {"content": " two"}]


async def test_stream_ending_before_message_stop_is_a_failure(anthropic: Harness) -> None:
    anthropic.fake.script.append(fa.text("one two", end_after=5))
    _, failure = await anthropic.stream_fails()
    assert failure.kind is FailureKind.CONNECT


async def test_empty_stream_is_an_empty_stream_failure(anthropic: Harness) -> None:
    anthropic.fake.script.append(fa.text("one", end_after=0))
    _, failure = await anthropic.stream_fails()
    assert failure.kind is FailureKind.EMPTY_STREAM


async def test_bad_key_is_a_deployment_failure(anthropic: Harness) -> None:
    anthropic.fake.api_key = "another-key"
    failure = await anthropic.complete_fails()
    assert failure.status == 401
    assert failure.kind is FailureKind.SERVER_ERROR


# --- pushed (the relay's fast path) --------------------------------------------------------


async def _pushed(anthropic: Harness, **body: Any) -> tuple[list[Json], Exception | None]:
    stream = anthropic.provider.stream(chat(stream=True, **body), anthropic.deployment)
    assert isinstance(stream, ChunkStream)
    try:
        chunks = [await anext(stream)]  # failover pulls the first; the relay has the rest pushed
        consumer = Collected()
        stream.push(consumer)
        async with asyncio.timeout(10):
            await consumer.ended.wait()
    finally:
        await stream.aclose()
    return chunks + consumer.chunks, consumer.failure


async def _pulled(anthropic: Harness, **body: Any) -> tuple[list[Json], Exception | None]:
    chunks: list[Json] = []
    try:
        async for chunk in anthropic.provider.stream(chat(stream=True, **body),
                                                     anthropic.deployment):
            chunks.append(chunk)
    except UpstreamFailure as failure:
        return chunks, failure
    return chunks, None


def _same_ids(chunks: list[Json]) -> list[Json]:
    return [{**c, "id": "", "created": 0} for c in chunks]


@pytest.mark.parametrize(("answer", "body", "kind"), [
    (lambda: fa.text("Hello there world", use=fa.usage(12, 3)), {}, None),
    (lambda: fa.tool_use([("get_weather", {"city": "Paris"})], lead_text="Checking."),
     {"tools": [WEATHER_TOOL]}, None),
    (lambda: fa.tool_use([("json_response", {"answer": 42})]),
     {"response_format": {"type": "json_object"}}, None),
    (fa.error_in_stream, {}, FailureKind.ERROR_IN_BODY),
    (lambda: fa.text("one two three four", cut_after=5), {}, FailureKind.CONNECT),
    (lambda: fa.text("one two", end_after=5), {}, FailureKind.CONNECT),
], ids=["text-and-usage", "tool-calls", "json-mode", "error-event-mid-stream", "cut",
        "ended-before-message-stop"])
async def test_a_pushed_stream_gives_the_chunks_and_end_of_the_pulled_one(
    anthropic: Harness, answer: Any, body: Json, kind: FailureKind | None
) -> None:
    outcomes = []
    for read in (_pulled, _pushed):
        anthropic.fake.script.append(answer())
        chunks, failure = await read(anthropic, **body)
        assert (failure.kind if isinstance(failure, UpstreamFailure) else failure) == kind
        outcomes.append((_same_ids(chunks), str(failure)))
    assert outcomes[0] == outcomes[1]
