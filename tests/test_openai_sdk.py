"""The official ``openai`` SDK pointed at the gateway by ``base_url``: what users will do."""

from __future__ import annotations

import asyncio

import openai
import pytest
from aiohttp.test_utils import TestClient

from tests.fake_openai import FakeOpenAI, Reply

MESSAGES = [{"role": "user", "content": "Say hello"}]
TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
}


def _base(client: TestClient) -> str:
    return str(client.make_url("/v1"))


async def test_async_sdk_non_streaming(one_upstream: tuple[TestClient, FakeOpenAI]) -> None:
    client, _ = one_upstream
    async with openai.AsyncOpenAI(base_url=_base(client), api_key="k", max_retries=0) as sdk:
        reply = await sdk.chat.completions.create(model="small", messages=MESSAGES)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "Hello from the fake provider."
    assert reply.usage is not None and reply.usage.prompt_tokens == 11


async def test_async_sdk_streaming_with_usage(one_upstream: tuple[TestClient, FakeOpenAI]) -> None:
    client, _ = one_upstream
    async with openai.AsyncOpenAI(base_url=_base(client), api_key="k", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model="small", messages=MESSAGES, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake provider."
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


async def test_async_sdk_tool_call(one_upstream: tuple[TestClient, FakeOpenAI]) -> None:
    client, fake = one_upstream
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    fake.script.append(Reply(tool_call=call))
    async with openai.AsyncOpenAI(base_url=_base(client), api_key="k", max_retries=0) as sdk:
        reply = await sdk.chat.completions.create(
            model="small", messages=MESSAGES, tools=[TOOL], tool_choice="auto",  # type: ignore[arg-type, list-item]
        )
    assert reply.choices[0].finish_reason == "tool_calls"
    tool_calls = reply.choices[0].message.tool_calls
    assert tool_calls is not None and tool_calls[0].function.arguments == '{"city": "Oslo"}'
    assert fake.requests[0]["tools"] == [TOOL] and fake.requests[0]["tool_choice"] == "auto"


async def test_async_sdk_sees_broken_stream_as_an_error(
    one_upstream: tuple[TestClient, FakeOpenAI],
) -> None:
    client, fake = one_upstream
    fake.script.append(Reply(kind="cut", chunks_before_cut=3))
    async with openai.AsyncOpenAI(base_url=_base(client), api_key="k", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(model="small", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        with pytest.raises(openai.APIError, match="stream broke"):
            async for _ in stream:
                pass


async def test_async_sdk_maps_unknown_model_to_not_found(
    one_upstream: tuple[TestClient, FakeOpenAI],
) -> None:
    client, _ = one_upstream
    async with openai.AsyncOpenAI(base_url=_base(client), api_key="k", max_retries=0) as sdk:
        with pytest.raises(openai.NotFoundError) as caught:
            await sdk.chat.completions.create(model="nope", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.code == "model_not_found"


def _sync_round_trip(base_url: str) -> tuple[str, str]:
    with openai.OpenAI(base_url=base_url, api_key="k", max_retries=0) as sdk:
        whole = sdk.chat.completions.create(model="small", messages=MESSAGES)  # type: ignore[arg-type]
        stream = sdk.chat.completions.create(model="small", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    return whole.choices[0].message.content or "", streamed


async def test_sync_sdk_streaming_and_not(one_upstream: tuple[TestClient, FakeOpenAI]) -> None:
    client, _ = one_upstream
    # The sync client blocks; run it in a thread so this loop keeps serving gateway and fake.
    whole, streamed = await asyncio.to_thread(_sync_round_trip, _base(client))
    assert whole == streamed == "Hello from the fake provider."
