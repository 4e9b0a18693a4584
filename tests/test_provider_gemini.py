"""Tests of ``gateway/upstream/providers/gemini.py`` against the in-process fake Gemini API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pytest_aiohttp import AiohttpServer

from gateway.core.answer import Deployment, Json
from gateway.core.config import ModelSettings, ProviderSettings
from gateway.core.errors import FailureKind, InvalidRequest, UpstreamFailure
from gateway.upstream.calls import Upstream
from gateway.upstream.http_client import HttpClient
from gateway.upstream.providers.gemini import GeminiProvider
from gateway.upstream.providers.gemini_schema import gemini_schema
from tests import fake_gemini as fg
from tests import provider_harness
from tests.fake_gemini import FakeGemini, fake_gemini_app
from tests.provider_harness import chat, deltas

Harness = provider_harness.Harness[FakeGemini]


def deployment(base_url: str, api_key: str = "test-gemini-key") -> Deployment:
    return Deployment(
        ModelSettings(name="smart", provider="gemini", upstream_model="gemini-fake", tier="cheap"),
        ProviderSettings(name="gemini", kind="gemini", base_url=base_url, api_key=api_key),
    )


@pytest.fixture
async def gemini(aiohttp_server: AiohttpServer) -> AsyncIterator[Harness]:
    fake = FakeGemini()
    server = await aiohttp_server(fake_gemini_app(fake))
    async with HttpClient() as session:
        yield Harness(fake, GeminiProvider(Upstream(session)), deployment(
            str(server.make_url("/v1beta"))
        ))


# --- request translation -------------------------------------------------------------------


async def test_request_goes_to_generate_content_with_key_header(gemini: Harness) -> None:
    await gemini.complete()
    received = gemini.fake.requests[-1]
    assert (received.model, received.method) == ("gemini-fake", "generateContent")
    assert received.headers["x-goog-api-key"] == "test-gemini-key"
    assert "key" not in received.query


async def test_messages_become_contents_with_system_instruction(gemini: Harness) -> None:
    await gemini.complete(messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Use French."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Salut"},
        {"role": "user", "content": [{"type": "text", "text": "Again"},
                                     {"type": "text", "text": "please"}]},
        {"role": "user", "content": "now"},
    ])
    sent = gemini.sent()
    assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Use French."}]}
    assert sent["contents"] == [
        {"role": "user", "parts": [{"text": "Hi"}]},
        {"role": "model", "parts": [{"text": "Salut"}]},
        {"role": "user", "parts": [{"text": "Again"}, {"text": "please"}, {"text": "now"}]},
    ]


async def test_generation_parameters_go_to_generation_config(gemini: Harness) -> None:
    await gemini.complete(max_tokens=50, temperature=0.3, top_p=0.9, stop=["END"], n=2, seed=7,
                          response_format={"type": "json_object"})
    assert gemini.sent()["generationConfig"] == {
        "maxOutputTokens": 50, "temperature": 0.3, "topP": 0.9, "seed": 7,
        "stopSequences": ["END"], "candidateCount": 2, "responseMimeType": "application/json",
    }


async def test_json_schema_is_cut_to_gemini_subset(gemini: Harness) -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "format": "uri"},
            "tags": {"type": "array", "items": {"$ref": "#/$defs/Tag"}},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            "size": {"type": ["integer", "null"], "enum": [1, 2]},
        },
        "required": ["name"],
        "$defs": {"Tag": {"type": "string", "const": "x", "description": "a tag"}},
    }
    await gemini.complete(response_format={
        "type": "json_schema", "json_schema": {"name": "thing", "schema": schema, "strict": True}
    })
    assert gemini.sent()["generationConfig"]["responseSchema"] == {
        "type": "OBJECT",
        "required": ["name"],
        "properties": {
            "name": {"type": "STRING"},
            "tags": {"type": "ARRAY",
                     "items": {"type": "STRING", "enum": ["x"], "description": "a tag"}},
            "note": {"type": "STRING", "nullable": True, "default": None},
            "size": {"type": "INTEGER", "nullable": True, "enum": ["1", "2"]},
        },
    }


def test_recursive_schema_is_unsupported_naming_the_parameter() -> None:
    schema = {"$ref": "#/$defs/Node", "$defs": {"Node": {
        "type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}}}
    with pytest.raises(UpstreamFailure) as caught:
        gemini_schema(schema, "response_format.json_schema.schema")
    assert caught.value.kind is FailureKind.UNSUPPORTED
    assert "response_format.json_schema.schema" in caught.value.message


def test_reference_outside_the_schema_is_unsupported() -> None:
    with pytest.raises(UpstreamFailure) as caught:
        gemini_schema({"$ref": "https://example.com/thing.json"}, "tools[0].function.parameters")
    assert caught.value.kind is FailureKind.UNSUPPORTED


def test_reference_to_nothing_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest) as caught:
        gemini_schema({"properties": {"a": {"$ref": "#/$defs/Missing"}}}, "tools[0].parameters")
    assert caught.value.param == "tools[0].parameters"


def test_same_definition_used_twice_is_not_recursion() -> None:
    schema = {"type": "object", "$defs": {"Tag": {"type": "string"}}, "properties": {
        "a": {"$ref": "#/$defs/Tag"}, "b": {"type": "array", "items": {"$ref": "#/$defs/Tag"}}}}
    assert gemini_schema(schema, "p")["properties"] == {
        "a": {"type": "STRING"}, "b": {"type": "ARRAY", "items": {"type": "STRING"}},
    }


async def test_recursive_tool_schema_is_unsupported_before_any_call(gemini: Harness) -> None:
    tree = {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}}
    tool = {"type": "function", "function": {"name": "walk", "parameters": tree}}
    _, failure = await gemini.stream_fails(tools=[tool])
    assert failure.kind is FailureKind.UNSUPPORTED
    assert gemini.fake.requests == []


async def test_tools_and_tool_choice_become_function_declarations(gemini: Harness) -> None:
    tools = [
        {"type": "function", "function": {
            "name": "get_weather", "description": "Weather now",
            "parameters": {"type": "object", "additionalProperties": False,
                           "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        {"type": "function", "function": {
            "name": "now", "parameters": {"type": "object", "properties": {}}}},
    ]
    await gemini.complete(tools=tools, tool_choice={"type": "function",
                                                    "function": {"name": "get_weather"}})
    sent = gemini.sent()
    assert sent["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather now",
         "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}},
                        "required": ["city"]}},
        {"name": "now"},
    ]}]
    assert sent["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }


@pytest.mark.parametrize(("choice", "mode"), [("auto", "AUTO"), ("none", "NONE"),
                                               ("required", "ANY")])
async def test_tool_choice_modes(gemini: Harness, choice: str, mode: str) -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    await gemini.complete(tools=tools, tool_choice=choice)
    assert gemini.sent()["toolConfig"] == {"functionCallingConfig": {"mode": mode}}


async def test_tool_history_becomes_function_call_and_response_parts(gemini: Harness) -> None:
    signature = {"google": {"thought_signature": "c2lnbmF0dXJl"}}
    await gemini.complete(messages=[
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "extra_content": signature,
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "sunny"},
    ])
    assert gemini.sent()["contents"][1:] == [
        {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
             "thoughtSignature": "c2lnbmF0dXJl"},
            {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
        ]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
            {"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}},
        ]},
    ]


async def test_tool_result_for_unknown_call_is_refused(gemini: Harness) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await gemini.complete(messages=[
            {"role": "user", "content": "Hi"},
            {"role": "tool", "tool_call_id": "call_missing", "content": "x"},
        ])
    assert caught.value.param == "messages[1].tool_call_id"
    assert gemini.fake.requests == []


async def test_data_url_image_becomes_inline_data(gemini: Harness) -> None:
    await gemini.complete(messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]}])
    assert gemini.sent()["contents"][0]["parts"] == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
    ]


async def test_percent_encoded_data_url_is_sent_as_base64(gemini: Harness) -> None:
    await gemini.complete(messages=[{"role": "user", "content": [
        {"type": "file", "file": {"file_data": "data:,caf%C3%A9", "filename": "note.txt"}},
    ]}])
    assert gemini.sent()["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "text/plain", "data": "Y2Fmw6k="}},
    ]


async def test_audio_becomes_inline_data(gemini: Harness) -> None:
    await gemini.complete(messages=[{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ]}])
    assert gemini.sent()["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
    ]


@pytest.mark.parametrize("part", [
    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    {"type": "file", "file": {"file_id": "file-abc123"}},
    {"type": "refusal", "refusal": "no"},
], ids=["image-by-url", "file-by-id", "unknown-part-type"])
async def test_parts_gemini_cannot_express_are_unsupported(gemini: Harness, part: Json) -> None:
    failure = await gemini.complete_fails(messages=[{"role": "user", "content": [part]}])
    assert failure.kind is FailureKind.UNSUPPORTED
    assert "messages[0].content[0]" in failure.message
    assert gemini.fake.requests == []


@pytest.mark.parametrize(("part", "param"), [
    ({"type": "image_url", "image_url": {"url": "cat.png"}},
     "messages[0].content[0].image_url.url"),
    ({"type": "image_url", "image_url": {"url": "data:image/png;base64"}},
     "messages[0].content[0].image_url.url"),
    ({"type": "file", "file": {}}, "messages[0].content[0].file.file_data"),
    ({"type": "input_audio", "input_audio": {"data": "UklGRg=="}},
     "messages[0].content[0].input_audio"),
], ids=["not-a-url", "data-url-without-comma", "file-without-data", "audio-without-format"])
async def test_malformed_parts_are_invalid_requests(
    gemini: Harness, part: Json, param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await gemini.complete(messages=[{"role": "user", "content": [part]}])
    assert caught.value.param == param


async def test_only_system_messages_are_unsupported(gemini: Harness) -> None:
    failure = await gemini.complete_fails(messages=[{"role": "system", "content": "Be brief."}])
    assert failure.kind is FailureKind.UNSUPPORTED


async def test_tool_call_with_non_object_arguments_is_an_invalid_request(
    gemini: Harness,
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await gemini.complete(messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "x"},
        ])
    assert caught.value.param == "messages[1].tool_calls[0].function"


# --- response translation ------------------------------------------------------------------


async def test_text_answer_becomes_chat_completion_with_usage(gemini: Harness) -> None:
    gemini.fake.script.append(fg.text("Bonjour !", meta=fg.usage(
        10, 4, cachedContentTokenCount=6, thoughtsTokenCount=3
    )))
    body = await gemini.complete()
    assert body["object"] == "chat.completion"
    assert body["choices"] == [{
        "index": 0, "message": {"role": "assistant", "content": "Bonjour !", "refusal": None},
        "logprobs": None, "finish_reason": "stop",
    }]
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17,
                             "prompt_tokens_details": {"cached_tokens": 6},
                             "completion_tokens_details": {"reasoning_tokens": 3}}


async def test_more_cached_tokens_than_prompt_tokens_are_cut_to_the_prompt(
    gemini: Harness,
) -> None:
    gemini.fake.script.append(fg.text("Hi", meta=fg.usage(10, 4, cachedContentTokenCount=60)))
    body = await gemini.complete()
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 10}


@pytest.mark.parametrize(("finish", "expected"), [
    ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
    ("PROHIBITED_CONTENT", "content_filter"), ("OTHER", "stop"),
])
async def test_finish_reasons_are_translated(gemini: Harness, finish: str, expected: str) -> None:
    gemini.fake.script.append(fg.text("cut", finish=finish))
    body = await gemini.complete()
    assert body["choices"][0]["finish_reason"] == expected


async def test_function_calls_become_tool_calls(gemini: Harness) -> None:
    gemini.fake.script.append(fg.function_calls(
        [("get_weather", {"city": "Paris"}), ("get_time", {})], signature="c2ln"
    ))
    body = await gemini.complete()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [(c["type"], c["function"]) for c in calls] == [
        ("function", {"name": "get_weather", "arguments": '{"city":"Paris"}'}),
        ("function", {"name": "get_time", "arguments": "{}"}),
    ]
    assert calls[0]["extra_content"] == {"google": {"thought_signature": "c2ln"}}
    assert "extra_content" not in calls[1]
    assert calls[0]["id"] != calls[1]["id"]


async def test_blocked_prompt_is_a_client_error_with_content_filter_code(gemini: Harness) -> None:
    gemini.fake.script.append(fg.blocked("PROHIBITED_CONTENT"))
    failure = await gemini.complete_fails()
    assert failure.kind is FailureKind.CLIENT_ERROR
    assert failure.status == 400
    assert failure.body == {"error": {
        "message": "Gemini blocked the prompt (PROHIBITED_CONTENT).",
        "type": "invalid_request_error", "code": "content_filter",
    }}


# --- streaming -----------------------------------------------------------------------------


async def test_stream_sends_role_text_finish_then_usage(gemini: Harness) -> None:
    gemini.fake.script.append(fg.text("Hello there world"))
    chunks = await gemini.stream()
    received = gemini.fake.requests[-1]
    assert (received.method, received.query) == ("streamGenerateContent", {"alt": "sse"})
    assert deltas(chunks) == [
        {"role": "assistant", "content": ""},
        {"content": "Hello"}, {"content": " there"}, {"content": " world"}, {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * 4 + ["stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


async def test_stream_function_calls_become_indexed_tool_call_deltas(gemini: Harness) -> None:
    gemini.fake.script.append(fg.function_calls(
        [("get_weather", {"city": "Paris"}), ("get_time", {})], lead_text="Checking."
    ))
    chunks = await gemini.stream()
    got = deltas(chunks)
    assert got[1] == {"content": "Checking."}
    first, second = got[2]["tool_calls"][0], got[3]["tool_calls"][0]
    assert (first["index"], first["type"], first["function"]) == (
        0, "function", {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    )
    assert (second["index"], second["function"]["name"]) == (1, "get_time")
    assert first["id"].startswith("call_")
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_stream_of_blocked_prompt_fails_before_any_chunk(gemini: Harness) -> None:
    gemini.fake.script.append(fg.blocked())
    _, failure = await gemini.stream_fails()
    assert failure.kind is FailureKind.CLIENT_ERROR


# --- errors --------------------------------------------------------------------------------


async def test_429_carries_retry_after_header(gemini: Harness) -> None:
    gemini.fake.script.append(fg.failure(429, "Resource exhausted.", "RESOURCE_EXHAUSTED",
                                         headers={"Retry-After": "12"}))
    failure = await gemini.complete_fails()
    assert failure.kind is FailureKind.RATE_LIMITED
    assert failure.retry_after_s == 12.0
    assert "Resource exhausted." in failure.message


async def test_429_without_header_takes_retry_delay_from_body(gemini: Harness) -> None:
    gemini.fake.script.append(fg.failure(429, "Quota exceeded.", "RESOURCE_EXHAUSTED",
                                         retry_delay="37s"))
    _, failure = await gemini.stream_fails()
    assert failure.kind is FailureKind.RATE_LIMITED
    assert failure.retry_after_s == 37.0


async def test_500_is_a_retryable_server_error(gemini: Harness) -> None:
    gemini.fake.script.append(fg.failure(500, "Internal error.", "INTERNAL"))
    failure = await gemini.complete_fails()
    assert failure.kind is FailureKind.SERVER_ERROR
    assert failure.retryable


async def test_bad_api_key_fails_the_deployment_not_the_request(gemini: Harness) -> None:
    gemini.fake.api_key = "another-key"
    failure = await gemini.complete_fails()
    assert failure.status == 400
    assert failure.kind is FailureKind.SERVER_ERROR


async def test_invalid_argument_stays_a_client_error(gemini: Harness) -> None:
    gemini.fake.script.append(fg.failure(400, "Bad schema.", "INVALID_ARGUMENT"))
    failure = await gemini.complete_fails()
    assert failure.kind is FailureKind.CLIENT_ERROR


async def test_error_in_200_body_is_a_failure(gemini: Harness) -> None:
    gemini.fake.script.append(fg.error_in_stream("Backend hiccup."))
    failure = await gemini.complete_fails()
    assert failure.kind is FailureKind.ERROR_IN_BODY
    assert failure.message == "Backend hiccup."


async def test_error_event_mid_stream_is_a_failure_after_the_first_chunks(
    gemini: Harness,
) -> None:
    gemini.fake.script.append(fg.error_in_stream("Backend hiccup."))
    stream = gemini.provider.stream(chat(stream=True), gemini.deployment)
    seen = [await anext(stream), await anext(stream)]
    assert deltas(seen) == [{"role": "assistant", "content": ""}, {"content": "partial"}]
    with pytest.raises(UpstreamFailure) as caught:
        await anext(stream)
    assert caught.value.kind is FailureKind.ERROR_IN_BODY


async def test_stream_cut_mid_way_is_a_connection_failure(gemini: Harness) -> None:
    gemini.fake.script.append(fg.text("one two three four", cut_after=2))
    seen, failure = await gemini.stream_fails()
    assert failure.kind is FailureKind.CONNECT
    assert deltas(seen)[1:] == [{"content": "one"}, {"content": " two"}]


async def test_stream_ending_without_finish_reason_is_a_failure(gemini: Harness) -> None:
    gemini.fake.script.append(fg.text("one two three", end_after=2))
    _, failure = await gemini.stream_fails()
    assert failure.kind is FailureKind.CONNECT


async def test_empty_stream_is_an_empty_stream_failure(gemini: Harness) -> None:
    gemini.fake.script.append(fg.text("one two", end_after=0))
    _, failure = await gemini.stream_fails()
    assert failure.kind is FailureKind.EMPTY_STREAM
