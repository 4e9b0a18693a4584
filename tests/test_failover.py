"""Failover across deployments and the circuit breakers (gateway/upstream/failover.py)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.core.config import FailoverSettings
from gateway.core.errors import FailureKind, UpstreamFailure
from gateway.tenants.context import LEDGER_KEY, STORE_KEY
from gateway.tenants.ledger import recent
from gateway.upstream.appkeys import FAILOVER
from gateway.upstream.failover import BreakerState, CallKind, Health
from tests.conftest import GatewayFactory, model, openai_provider
from tests.fake_openai import FakeOpenAI, Reply, fake_openai_app
from tests.test_chat_api import USER, sse_payloads
from tests.test_metrics import samples, total

Pair = tuple[TestClient, FakeOpenAI, FakeOpenAI]


async def _two_deployments(aiohttp_server: Any, make_gateway: GatewayFactory,
                           failover: dict[str, Any], **provider: Any) -> Pair:
    """Deployments ``a`` (cheaper, tried first) and ``b`` behind the public name ``m``."""
    first, second = FakeOpenAI(), FakeOpenAI()
    s1: TestServer = await aiohttp_server(fake_openai_app(first))
    s2: TestServer = await aiohttp_server(fake_openai_app(second))
    client = await make_gateway({
        "providers": [openai_provider("a", str(s1.make_url("/v1")), **provider),
                      openai_provider("b", str(s2.make_url("/v1")), **provider)],
        "models": [model("m", "a", input_price_per_mtok=1.0),
                   model("m", "b", input_price_per_mtok=2.0)],
        "failover": failover,
    })
    return client, first, second


@pytest.fixture
async def two_upstreams(aiohttp_server: Any, make_gateway: GatewayFactory) -> Pair:
    timeouts = {"first_byte_timeout_s": 0.5, "chunk_timeout_s": 0.5}
    client, first, second = await _two_deployments(
        aiohttp_server, make_gateway, {"failure_threshold": 2, "cooldown_s": 60},
        timeouts=timeouts)
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
    Reply(kind="hang", chunks_before_cut=3),
], ids=["connection-cut", "body-ends-without-done", "malformed-chunk", "silent-mid-stream"])
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


def _breaker(h: Health, now: float) -> BreakerState:
    return BreakerState.HALF_OPEN if h.rested(now) else h.state


async def _breaker_shown(client: TestClient, deployment: str) -> float:
    """The breaker's state as ``/metrics`` tells it: 0 closed, 1 half-open, 2 open."""
    parsed = samples(await (await client.get("/metrics")).text())
    return total(parsed, "gateway_circuit_breaker_state", deployment=deployment)


async def test_a_rested_deployment_gets_its_probe_while_its_partner_serves(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """The cheaper deployment, failed and rested, serves the first request after its cooldown
    although its partner never stopped answering."""
    client, cheap, _ = await _two_deployments(aiohttp_server, make_gateway,
                                              {"failure_threshold": 2, "cooldown_s": 0.3})
    cheap.script.extend([Reply(kind="status", status=500)] * 2)
    for _ in range(2):
        assert (await _ask(client)).headers["x-gateway-provider"] == "b"
    health = client.server.app[FAILOVER].health["a/m"]
    assert health.state is BreakerState.OPEN
    assert await _breaker_shown(client, "a/m") == 2
    # Load on the partner while the cheap one rests (0.3 s): the first request that starts
    # after the rest is the probe, so the loop ends one request after it at the latest.
    while True:
        sent = time.monotonic()
        resp = await _ask(client)
        assert resp.status == 200
        if resp.headers["x-gateway-provider"] == "a":
            break
        assert sent < health.open_until, "a request after the rest went to the partner"
    assert health.state is BreakerState.CLOSED
    assert await _breaker_shown(client, "a/m") == 0
    assert (await _ask(client)).headers["x-gateway-provider"] == "a"
    assert len(cheap.requests) == 4


async def test_a_failed_probe_fails_over_within_the_same_request(two_upstreams: Pair) -> None:
    client, first, _ = two_upstreams
    first.script.extend([Reply(kind="status", status=500)] * 2)
    for _ in range(2):
        await _ask(client)
    health = client.server.app[FAILOVER].health["a/m"]
    health.open_until = time.monotonic()  # the rest is over (the fixture's is a minute)
    first.script.append(Reply(kind="status", status=500))
    resp = await _ask(client)
    assert resp.status == 200 and resp.headers["x-gateway-provider"] == "b"
    assert resp.headers["x-gateway-attempts"] == "2"
    assert health.state is BreakerState.OPEN and health.cooldown_s == 120, "rest doubled"


async def test_a_deployment_that_breaks_every_stream_opens_though_plain_calls_pass(
    two_upstreams: Pair,
) -> None:
    client, first, second = two_upstreams
    first.default = Reply(kind="cut", chunks_before_cut=3)  # plain answers are whole
    broken = 0
    for i in range(20):
        resp = await _ask(client, stream=i % 2 == 1)
        assert resp.status == 200
        body = await resp.text()
        if i % 2 == 1 and "[DONE]" not in sse_payloads(body):
            broken += 1
    assert broken == 2, "the breaker opened after the threshold's run of broken streams"
    assert client.server.app[FAILOVER].health["a/m"].state is BreakerState.OPEN
    assert await _breaker_shown(client, "a/m") == 2
    assert second.requests, "the partner took over"


async def test_a_huge_retry_after_is_capped_by_max_cooldown(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    fakes = [FakeOpenAI(), FakeOpenAI()]
    servers = [await aiohttp_server(fake_openai_app(f)) for f in fakes]
    client = await make_gateway({
        "providers": [openai_provider(n, str(s.make_url("/v1")))
                      for n, s in zip("ab", servers, strict=True)],
        "models": [model("m", "a", input_price_per_mtok=1.0),
                   model("m", "b", input_price_per_mtok=2.0)],
        "failover": {"max_cooldown_s": 0.4, "cooldown_s": 0.2},
    })
    for fake in fakes:
        fake.script.append(Reply(kind="status", status=429, headers={"Retry-After": "3600"}))
    started = time.monotonic()
    resp = await _ask(client)
    # Every deployment rate limited: a 429, told to come back when the first rests no more.
    assert resp.status == 429 and (await resp.json())["error"]["code"] == "upstream_rate_limited"
    assert int(resp.headers["Retry-After"]) <= 1
    health = client.server.app[FAILOVER].health
    assert all(h.open_until <= started + 0.4 + 1 for h in health.values())
    refused = await _ask(client)
    assert refused.status == 429 and int(refused.headers["Retry-After"]) <= 1
    while time.monotonic() < max(h.open_until for h in health.values()):
        await _ask(client)  # bounded: the rest is at most 0.4 s
    resp = await _ask(client)
    assert resp.status == 200


def test_a_window_of_mostly_failed_streams_opens_the_breaker_without_a_run() -> None:
    h = _health(failure_threshold=5, min_calls=5, failure_rate=0.5, window_calls=10)
    failure = UpstreamFailure(FailureKind.CONNECT, "stream broke")
    for t, failed in enumerate((True, False, True, False, True, False)):
        if failed:
            h.record_failure(failure, float(t), CallKind.STREAM)
        else:
            h.record_success(10.0, 5.0, CallKind.STREAM, now=float(t))
        h.record_success(10.0, now=float(t))  # plain calls pass throughout
    assert h.state is BreakerState.OPEN, "3 of 5 streams failed, never two in a row"


def test_failures_older_than_the_window_are_forgotten() -> None:
    h = _health(failure_threshold=100, min_calls=4, failure_rate=0.5, window_s=10)
    failure = UpstreamFailure(FailureKind.SERVER_ERROR, "boom")
    for t in (0.0, 1.0):
        h.record_failure(failure, t)
    for t in (12.0, 13.0, 14.0):
        h.record_success(10.0, now=t)
    h.record_failure(failure, 20.0)  # the first two have left the window: 1 of 4
    assert h.state is BreakerState.CLOSED
    assert not h.windows[CallKind.PLAIN].tripped(20.0, h.settings)


def test_a_rested_breaker_is_shown_half_open_and_claims_one_probe() -> None:
    h = _health(failure_threshold=1, cooldown_s=10)
    h.record_failure(UpstreamFailure(FailureKind.SERVER_ERROR, "boom"), now=0.0)
    assert _breaker(h, 5.0) is BreakerState.OPEN and _breaker(h, 10.0) is BreakerState.HALF_OPEN
    assert h.available(10.0) and not h.rested(10.0), "the probe is out"


async def test_one_request_probes_a_rested_deployment_while_the_rest_go_to_its_partner(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    client, cheap, _ = await _two_deployments(aiohttp_server, make_gateway,
                                              {"failure_threshold": 1, "cooldown_s": 60})
    cheap.script.extend([Reply(kind="status", status=500), Reply(kind="hang")])
    assert (await _ask(client)).headers["x-gateway-provider"] == "b"
    health = client.server.app[FAILOVER].health["a/m"]
    health.open_until = time.monotonic()  # the rest is over (a minute, unwaited)
    probe = asyncio.ensure_future(_ask(client))
    await cheap.wait_for_requests(2)  # the probe is out, held by the fake
    during = [(await _ask(client)).headers["x-gateway-provider"] for _ in range(5)]
    assert during == ["b"] * 5, "no second probe while the first is out"
    cheap.release.set()
    answered = await probe
    assert answered.status == 200 and answered.headers["x-gateway-provider"] == "a"
    assert health.state is BreakerState.CLOSED and len(cheap.requests) == 2


def test_stragglers_failing_after_the_breaker_opened_do_not_lengthen_its_rest() -> None:
    h = _health(failure_threshold=2, cooldown_s=10, max_cooldown_s=300)
    failure = UpstreamFailure(FailureKind.SERVER_ERROR, "boom")
    for _ in range(2):
        h.record_failure(failure, now=0.0)
    assert h.state is BreakerState.OPEN and h.open_until == 10.0
    for _ in range(6):  # the rest of a burst of concurrent requests, failing late
        h.record_failure(failure, now=1.0)
    assert (h.open_until, h.cooldown_s) == (10.0, 10), "no doubling without a failed probe"
    told = UpstreamFailure(FailureKind.RATE_LIMITED, "slow down", retry_after_s=3600)
    h.record_failure(told, now=2.0)
    assert h.open_until == 302.0, "a Retry-After lengthens it, within max_cooldown_s"


async def test_an_upstream_silent_mid_stream_is_cut_recorded_and_its_connection_closed(
    two_upstreams: Pair,
) -> None:
    client, first, second = two_upstreams
    first.script.append(Reply(kind="hang", chunks_before_cut=3))
    resp = await _ask(client, stream=True)
    payloads = sse_payloads(await resp.text())
    error = json.loads(payloads[-1])["error"]
    assert (error["code"], "[DONE]" in payloads) == ("stream_interrupted", False)
    assert "no stream data for 0.5 s" in error["message"]
    async with asyncio.timeout(10):  # closed, not pooled with the rest of the body unread
        await first.disconnected.wait()
    app = client.server.app
    await app[LEDGER_KEY].flush()
    [row] = await recent(app[STORE_KEY])
    assert (row.status, row.deployment, row.tokens_out > 0) == (502, "a/m", True)
    assert second.requests == []
