"""Bad input gets a clear 4xx in OpenAI's error shape, and the gateway keeps serving."""

from __future__ import annotations

import gzip
import io
import json
import logging
import zlib
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.dialect_fixtures import Upstreams
from tests.fake_openai import FakeOpenAI

MSG = [{"role": "user", "content": "hi"}]

CASES: list[tuple[str, bytes, int, str | None]] = [
    ("not json", b"{nope", 400, None),
    ("invalid utf-8", b'{"model": "small", "messages": [{"role": "user", "content": "\xff"}]}',
     400, None),
    ("array body", b"[]", 400, None),
    ("empty body", b"", 400, None),
    ("missing model", b'{"messages": [{"role": "user", "content": "hi"}]}', 400, "model"),
    ("model not string", b'{"model": 5, "messages": []}', 400, "model"),
    ("missing messages", b'{"model": "small"}', 400, "messages"),
    ("empty messages", b'{"model": "small", "messages": []}', 400, "messages"),
    ("message not object", b'{"model": "small", "messages": ["hi"]}', 400, "messages[0]"),
    ("bad role", b'{"model": "small", "messages": [{"role": "bot", "content": "x"}]}', 400,
     "messages[0].role"),
    ("role not a string", b'{"model": "small", "messages": [{"role": ["user"], "content": "x"}]}',
     400, "messages[0].role"),
    ("content number", b'{"model": "small", "messages": [{"role": "user", "content": 1}]}', 400,
     "messages[0].content"),
]


def _with(**fields: Any) -> dict[str, Any]:
    return {"model": "small", "messages": MSG, **fields}


FIELD_CASES: list[tuple[dict[str, Any], str]] = [
    (_with(stream="yes"), "stream"),
    (_with(temperature=5), "temperature"),
    (_with(temperature="hot"), "temperature"),
    (_with(max_tokens=0), "max_tokens"),
    (_with(max_tokens=True), "max_tokens"),
    (_with(n=0), "n"),
    (_with(stop=[1, 2]), "stop"),
    (_with(tools=[{"type": "function"}]), "tools[0].function.name"),
    (_with(tool_choice="sometimes"), "tool_choice"),
    (_with(response_format={"type": "yaml"}), "response_format.type"),
    (_with(stream_options="usage"), "stream_options"),
    (_with(messages=[{"role": "tool", "content": "42"}]), "messages[0].tool_call_id"),
]


async def _still_serves(client: TestClient) -> None:
    resp = await client.post("/v1/chat/completions", json=_with())
    assert resp.status == 200


@pytest.mark.parametrize(("name", "body", "status", "param"), CASES, ids=[c[0] for c in CASES])
async def test_malformed_body_is_400_with_param(
    one_upstream: tuple[TestClient, FakeOpenAI], name: str, body: bytes, status: int,
    param: str | None,
) -> None:
    client, fake = one_upstream
    resp = await client.post("/v1/chat/completions", data=body,
                             headers={"Content-Type": "application/json"})
    assert resp.status == status, name
    error = (await resp.json())["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param
    assert fake.requests == []
    await _still_serves(client)


@pytest.mark.parametrize(("body", "param"), FIELD_CASES, ids=[c[1] for c in FIELD_CASES])
async def test_wrong_field_types_are_400_naming_the_field(
    one_upstream: tuple[TestClient, FakeOpenAI], body: dict[str, Any], param: str
) -> None:
    client, fake = one_upstream
    resp = await client.post("/v1/chat/completions", json=body)
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == param
    assert fake.requests == []


async def test_huge_body_is_413(one_upstream: tuple[TestClient, FakeOpenAI]) -> None:
    client, _fake = one_upstream
    huge = b'{"model": "small", "messages": [{"role": "user", "content": "' + b"a" * (
        5 * 1024 * 1024) + b'"}]}'
    resp = await client.post("/v1/chat/completions", data=io.BytesIO(huge))
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "request_too_large"
    await _still_serves(client)


async def test_huge_chunked_body_without_length_is_413(
    one_upstream: tuple[TestClient, FakeOpenAI],
) -> None:
    client, _ = one_upstream

    async def chunks() -> Any:
        for _ in range(6):
            yield b"x" * (1024 * 1024)

    resp = await client.post("/v1/chat/completions", data=chunks())
    assert resp.status == 413


async def test_unknown_path_and_wrong_method_are_openai_errors(
    one_upstream: tuple[TestClient, FakeOpenAI],
) -> None:
    client, _ = one_upstream
    missing = await client.get("/v1/nothing")
    assert missing.status == 404 and "error" in await missing.json()
    wrong = await client.get("/v1/chat/completions")
    assert wrong.status == 405 and "error" in await wrong.json()


@pytest.mark.parametrize(("body", "shown"), [
    (_with(n=0), "expected an integer from 1 to 128, got 0."),
    (_with(n=True), "got true."),
    (_with(temperature=5), "got 5."),
    (_with(temperature="hot"), "got 'hot'."),
    (_with(stream={"on": True}), "got an object."),
    (_with(max_tokens="x" * 500), "got a string of 500 characters."),
], ids=["n=0", "n=true", "temperature=5", "temperature=hot", "stream={}", "long stop"])
async def test_error_messages_say_what_was_given(
    one_upstream: tuple[TestClient, FakeOpenAI], body: dict[str, Any], shown: str
) -> None:
    client, _ = one_upstream
    resp = await client.post("/v1/chat/completions", json=body)
    assert resp.status == 400
    message = (await resp.json())["error"]["message"]
    assert message.endswith(shown), message


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/admin/tenants"])
async def test_a_body_that_does_not_decode_as_its_content_encoding_is_a_4xx_and_logs_no_error(
    one_upstream: tuple[TestClient, FakeOpenAI], path: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, fake = one_upstream
    resp = await client.post(path, data=b"not gzip at all" * 10, headers={
        "Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert resp.status == (401 if path.startswith("/admin") else 400)
    assert (await resp.json())["error"]["message"]  # OpenAI's shape or Anthropic's
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert fake.requests == []
    await _still_serves(client)


async def test_gzip_bodies_are_read_decoded_and_a_bomb_is_413(
    one_upstream: tuple[TestClient, FakeOpenAI],
) -> None:
    client, _ = one_upstream
    packed = gzip.compress(json.dumps(_with()).encode())
    resp = await client.post("/v1/chat/completions", data=packed,
                             headers={"Content-Encoding": "gzip"})
    assert resp.status == 200
    # 200 MB of one letter is 200 kB gzipped: the limit counts the decoded bytes.
    bomb = gzip.compress(b'{"model": "small", "messages": "' + b"a" * 200_000_000 + b'"}')
    resp = await client.post("/v1/chat/completions", data=bomb,
                             headers={"Content-Encoding": "gzip"})
    assert resp.status == 413


_PACKED = gzip.compress(json.dumps(_with()).encode())


@pytest.mark.parametrize(("encoding", "body", "status"), [
    ("gzip", _PACKED, 200),
    ("deflate", zlib.compress(json.dumps(_with()).encode()), 200),
    ("GZIP", _PACKED, 200),
    ("identity", json.dumps(_with()).encode(), 200),
    ("gzip", _PACKED[: len(_PACKED) // 2], 400),  # cut short
    ("deflate", _PACKED, 200),  # the header tells gzip from zlib whatever the name says
    ("gzip", b"", 400),  # no body at all: not JSON
    ("br", _PACKED, 415),
    ("gzip, gzip", gzip.compress(_PACKED), 415),
    ("bogus", b"{}", 415),
], ids=["gzip", "deflate", "upper case", "identity", "truncated", "zlib or gzip", "empty",
        "br", "twice", "unknown"])
async def test_content_encodings_are_decoded_or_refused_by_name(
    one_upstream: tuple[TestClient, FakeOpenAI], encoding: str, body: bytes, status: int
) -> None:
    client, _ = one_upstream
    resp = await client.post("/v1/chat/completions", data=body,
                             headers={"Content-Encoding": encoding})
    assert resp.status == status, await resp.text()
    if status == 415:
        error = (await resp.json())["error"]
        assert error["code"] == "unsupported_content_encoding" and encoding in error["message"]


def _deep(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/responses"])
@pytest.mark.parametrize("stream", [False, True])
async def test_json_nested_deeper_than_it_can_be_sent_on_is_400(
    one_upstream: tuple[TestClient, FakeOpenAI], path: str, stream: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """orjson reads 1024 levels but writes 254: a body 300 levels deep was a 500 when it was
    sent upstream (or a broken stream, and a failed write of the stored responses)."""
    client, fake = one_upstream
    body = {"model": "small", "max_tokens": 5, "stream": stream, "metadata": _deep(300),
            "messages": MSG, "input": "hi"}
    if path == "/v1/responses":
        del body["messages"], body["max_tokens"]
    elif path == "/v1/chat/completions":
        del body["input"]
    resp = await client.post(path, data=json.dumps(body))
    assert resp.status == 400
    raw = await resp.json()
    assert "nested deeper than" in raw["error"]["message"]
    assert fake.requests == []
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_tool_call_arguments_nested_too_deep_are_400_naming_the_call(
    upstreams: Upstreams,
) -> None:
    arguments = json.dumps(_deep(300))
    resp = await upstreams.client.post("/v1/chat/completions", json={
        "model": "claude", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "c1", "type": "function",
                "function": {"name": "f", "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "done"}]})
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == "messages[1].tool_calls[0].function"
