"""Failover across deployments and the circuit breakers (gateway/upstream/failover.py)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.core.config import FailoverSettings
from gateway.core.errors import FailureKind, UpstreamFailure
from gateway.upstream.failover import BreakerState, Health
from tests.conftest import GatewayFactory, model, openai_provider
from tests.fake_openai import FakeOpenAI, Reply, fake_openai_app
from tests.test_chat_api import USER, sse_payloads

Pair = tuple[TestClient, FakeOpenAI, FakeOpenAI]


@pytest.fixture
async def two_upstreams(aiohttp_server: Any, make_gateway: GatewayFactory) -> Pair:
    """Deployments ``a`` (cheaper, tried first) and ``b`` behind the public name ``m``."""
    first, second = FakeOpenAI(), FakeOpenAI()
    s1: TestServer = await aiohttp_server(fake_openai_app(first))
    s2: TestServer = await aiohttp_server(fake_openai_app(second))
    timeouts = {"first_byte_timeout_s": 0.5, "chunk_timeout_s": 0.5}
    client = await make_gateway({
        "providers": [openai_provider("a", str(s1.make_url("/v1")), timeouts=timeouts),
                      openai_provider("b", str(s2.make_url("/v1")), timeouts=timeouts)],
        "models": [model("m", "a", input_price_per_mtok=1.0),
                   model("m", "b", input_price_per_mtok=2.0)],
        "failover": {"failure_threshold": 2, "cooldown_s": 60},
    })
    yield client, first, second
    first.release.set()
    second.release.set()


Post = Callable[..., Awaitable[Any]]


async def _ask(client: TestClient, stream: bool = False) -> Any:
    return await client.post("/v1/chat/completions",
                             json={"model": "m", "messages": USER, "stream": stream})


@pytest.mark.parametrize("reply", [
    Reply(kind="status", status=500),
    Reply(kind="status", status=503),
    Reply(kind="status", status=429, headers={"Retry-After": "7"}),
    Reply(kind="error_in_200"),
    Reply(kind="hang"),
], ids=["500", "503", "429", "error-in-200", "slow-first-byte"])
async def test_failure_before_first_byte_moves_to_next_deployment(
    two_upstreams: Pair, reply: Reply
) -> None:
    client, first, second = two_upstreams
    first.script.append(reply)
    resp = await _ask(client)
    assert resp.status == 200
    assert resp.headers["x-gateway-provider"] == "b"
    assert resp.headers["x-gateway-attempts"] == "2"
    assert len(first.requests) == 1 and len(second.requests) == 1


@pytest.mark.parametrize("reply", [
    Reply(kind="status", status=502), Reply(kind="empty"), Reply(kind="not_sse"),
    Reply(kind="cut", chunks_before_cut=1), Reply(kind="hang", chunks_before_cut=0),
    Reply(kind="malformed", chunks_before_cut=1), Reply(kind="unfinished", chunks_before_cut=1),
], ids=["502", "empty-stream", "json-instead-of-sse", "cut-before-content", "hang",
        "malformed-chunk", "ends-before-content"])
async def test_stream_failing_before_content_moves_to_next_deployment(
    two_upstreams: Pair, reply: Reply
) -> None:
    client, first, _ = two_upstreams
    first.script.append(reply)
    resp = await _ask(client, stream=True)
    assert resp.status == 200
    assert resp.headers["x-gateway-provider"] == "b"
    payloads = sse_payloads(await resp.text())
    assert payloads[-1] == "[DONE]"


@pytest.mark.parametrize("reply", [
    Reply(kind="cut", chunks_before_cut=3),
    Reply(kind="unfinished", chunks_before_cut=3),
    Reply(kind="malformed", chunks_before_cut=3),
], ids=["connection-cut", "body-ends-without-done", "malformed-chunk"])
async def test_a_stream_broken_after_content_ends_in_an_error_event(
    two_upstreams: Pair, reply: Reply
) -> None:
    client, first, second = two_upstreams
    first.script.append(reply)
    resp = await _ask(client, stream=True)
    payloads = sse_payloads(await resp.text())
    assert "[DONE]" not in payloads
    assert json.loads(payloads[-1])["error"]["code"] == "stream_interrupted"
    assert second.requests == []


async def test_connection_refused_fails_over(
    fake_openai: tuple[FakeOpenAI, str], make_gateway: GatewayFactory, unused_tcp_port: int
) -> None:
    _fake, url = fake_openai
    client = await make_gateway({
        "providers": [openai_provider("dead", f"http://127.0.0.1:{unused_tcp_port}/v1"),
                      openai_provider("live", url)],
        "models": [model("m", "dead"), model("m", "live", input_price_per_mtok=1.0)],
    })
    resp = await _ask(client)
    assert resp.status == 200 and resp.headers["x-gateway-provider"] == "live"


async def test_every_deployment_failing_is_502_with_details(two_upstreams: Pair) -> None:
    client, first, second = two_upstreams
    first.script.append(Reply(kind="status", status=500))
    second.script.append(Reply(kind="status", status=500))
    resp = await _ask(client)
    assert resp.status == 502
    error = (await resp.json())["error"]
    assert error["code"] == "upstream_failed" and "a/m" in error["message"]


async def test_every_deployment_timing_out_is_504(two_upstreams: Pair) -> None:
    client, first, second = two_upstreams
    first.script.append(Reply(kind="hang"))
    second.script.append(Reply(kind="hang"))
    resp = await _ask(client)
    assert resp.status == 504


async def test_breaker_opens_after_repeated_failures_and_skips_deployment(
    two_upstreams: Pair,
) -> None:
    client, first, _second = two_upstreams
    first.script.extend([Reply(kind="status", status=500), Reply(kind="status", status=500)])
    for _ in range(2):
        assert (await _ask(client)).status == 200
    resp = await _ask(client)
    assert resp.headers["x-gateway-attempts"] == "1"
    assert resp.headers["x-gateway-provider"] == "b"
    assert len(first.requests) == 2, "an open breaker sends nothing to its deployment"


async def test_retry_after_rests_the_deployment(two_upstreams: Pair) -> None:
    client, first, _ = two_upstreams
    first.script.append(Reply(kind="status", status=429, headers={"Retry-After": "30"}))
    await _ask(client)
    await _ask(client)
    assert len(first.requests) == 1


def _health(**overrides: Any) -> Health:
    from gateway.core.answer import Deployment
    from gateway.core.config import ModelSettings, ProviderSettings

    d = Deployment(ModelSettings("m", "p", "u", "cheap"), ProviderSettings("p", "openai", "x"))
    return Health(d, FailoverSettings(**overrides))


def test_half_open_allows_one_probe_then_closes_on_success() -> None:
    h = _health(failure_threshold=1, cooldown_s=10)
    h.record_failure(UpstreamFailure(FailureKind.SERVER_ERROR, "boom"), now=100.0)
    assert h.state is BreakerState.OPEN
    assert not h.available(105.0)
    assert h.available(111.0) and h.state is BreakerState.HALF_OPEN
    assert not h.available(111.0), "only one probe while half-open"
    h.record_success(10.0)
    assert h.state is BreakerState.CLOSED and h.available(112.0)


def test_failed_probe_doubles_the_cooldown() -> None:
    h = _health(failure_threshold=1, cooldown_s=10, max_cooldown_s=15)
    h.record_failure(UpstreamFailure(FailureKind.SERVER_ERROR, "boom"), now=0.0)
    assert h.available(10.0)
    h.record_failure(UpstreamFailure(FailureKind.SERVER_ERROR, "again"), now=10.0)
    assert h.state is BreakerState.OPEN and h.cooldown_s == 15
    assert not h.available(24.0) and h.available(25.0)
