"""Keys, limits and the ledger on the chat path (gateway/api/chat.py,
gateway/pipeline/accounting.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.tenants.context import LEDGER_KEY, STORE_KEY
from gateway.tenants.keys import hash_key
from gateway.tenants.ledger import recent
from tests.conftest import ROOT, GatewayFactory, model, openai_provider
from tests.fake_openai import FakeOpenAI, Reply
from tests.tenant_fixtures import (
    GATEWAY_ENV,
    SECRET,
    bearer,
    new_tenant_key,
    priced_gateway_with_key,
)

USER = [{"role": "user", "content": "Say hello"}]
Keyed = tuple[TestClient, FakeOpenAI, str]


@pytest.fixture
async def keyed(fake_openai: tuple[FakeOpenAI, str], make_gateway: GatewayFactory) -> Keyed:
    """A gateway that requires keys, a tenant ``acme`` limited to 3 requests a minute, its key."""
    fake, url = fake_openai
    client, key = await priced_gateway_with_key(make_gateway, url, requests_per_minute=3)
    return client, fake, key


async def _ask(client: TestClient, key: str | None, **extra: Any) -> Any:
    headers = bearer(key) if key else {}
    return await client.post("/v1/chat/completions", headers=headers,
                             json={"model": "small", "messages": USER, **extra})


@pytest.mark.parametrize("header", [None, "Bearer gw-wrong", "Basic abc", "Bearer", "gw-x"])
async def test_requests_without_a_valid_key_get_the_same_401(
    keyed: Keyed, header: str | None
) -> None:
    client, fake, _ = keyed
    headers = {"Authorization": header} if header else {}
    resp = await client.post("/v1/chat/completions", headers=headers,
                             json={"model": "small", "messages": USER})
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "invalid_api_key"
    assert fake.requests == []


async def test_limits_answer_429_with_retry_after_and_rate_limit_headers(keyed: Keyed) -> None:
    client, fake, key = keyed
    for remaining in ("2", "1", "0"):
        ok = await _ask(client, key)
        assert ok.status == 200
        assert ok.headers["x-ratelimit-limit-requests"] == "3"
        assert ok.headers["x-ratelimit-remaining-requests"] == remaining
    refused = await _ask(client, key)
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert (await refused.json())["error"]["type"] == "rate_limit_error"
    assert len(fake.requests) == 3


async def test_streams_carry_the_rate_limit_headers_too(keyed: Keyed) -> None:
    client, _, key = keyed
    resp = await _ask(client, key, stream=True)
    await resp.read()
    assert resp.headers["x-ratelimit-limit-requests"] == "3"
    assert resp.headers["x-ratelimit-remaining-requests"] == "2"


async def test_rate_limit_headers_come_exactly_for_the_limits_that_apply_as_documented(
    keyed: Keyed,
) -> None:
    client, _, key = keyed
    unlimited = await new_tenant_key(client, "initech")
    tokens_only = await new_tenant_key(client, "globex", limits={"tokens_per_minute": 5000})
    seen = {}
    for name, k in (("acme", key), ("initech", unlimited), ("globex", tokens_only)):
        resp = await _ask(client, k)
        assert resp.status == 200
        seen[name] = sorted(h for h in resp.headers if h.lower().startswith("x-ratelimit-"))
    assert seen["acme"] == sorted(f"x-ratelimit-{w}-requests" for w in ("limit", "remaining",
                                                                          "reset"))
    assert seen["initech"] == []
    assert seen["globex"] == sorted(f"x-ratelimit-{w}-tokens" for w in ("limit", "remaining",
                                                                         "reset"))
    readme = (ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if "`x-ratelimit-limit-requests`" in line)
    assert "a tenant without limits gets none" in row  # what the README promises is true


async def test_every_request_gets_a_ledger_row_with_its_cost(keyed: Keyed) -> None:
    client, fake, key = keyed
    fake.script.extend([Reply(), Reply(usage=False), Reply(kind="status", status=500)])
    assert (await _ask(client, key)).status == 200
    streamed = await _ask(client, key, stream=True)
    await streamed.read()
    assert (await _ask(client, key)).status == 502
    app = client.server.app
    await app[LEDGER_KEY].flush()
    rows = await recent(app[STORE_KEY], tenant="acme")
    assert len(rows) == 3
    whole = next(r for r in rows if r.status == 200 and not r.estimated)
    estimated = next(r for r in rows if r.status == 200 and r.estimated)
    failed = next(r for r in rows if r.status == 502)
    assert whole.tokens_in == 11 and whole.deployment == "p1/small"
    assert whole.cost == pytest.approx((11 * 1.0 + whole.tokens_out * 2.0) / 1e6)
    assert estimated.tokens_out > 0 and estimated.cost > 0, (
        "a stream without provider usage is counted by the gateway and marked estimated")
    assert failed.cost == 0 and failed.attempts == 1


async def test_concurrent_requests_admit_exactly_the_limit(keyed: Keyed) -> None:
    client, _, key = keyed
    statuses = await asyncio.gather(*(_ask(client, key) for _ in range(12)))
    codes = sorted(r.status for r in statuses)
    assert codes.count(200) == 3 and codes.count(429) == 9


def test_key_digests_are_unchanged_so_stored_keys_keep_working() -> None:
    # HMAC-SHA-256 hex under the secret, as every stored key was hashed (values pinned).
    assert hash_key(SECRET, "gw-abc") == (
        "b6b710709b4bbb00ce0bd4f87c490e05966885098f372fc1fdc5a720f2a6b052")
    assert hash_key(SECRET, "gw-" + "\u00e9" * 300) == (  # cut to 256 characters first
        "4fe19eaf0e1a012d03bd2d6bb0fa1f71e2eb859fa317721ee8aa7a02842d192a")


async def test_without_required_keys_only_a_valid_key_names_its_tenant(
    fake_openai: tuple[FakeOpenAI, str], make_gateway: GatewayFactory
) -> None:
    _, url = fake_openai
    client = await make_gateway({
        "providers": [openai_provider("p1", url)],
        "models": [model("small", "p1")],
        "tenants": {"require_keys": False, "bootstrap": False, "tokenizer": ""},
    }, env=GATEWAY_ENV)
    key = await new_tenant_key(client, "acme")
    for presented in (key, None, "gw-wrong"):
        assert (await _ask(client, presented)).status == 200
    app = client.server.app
    await app[LEDGER_KEY].flush()
    rows = await recent(app[STORE_KEY])
    assert sorted(r.tenant for r in rows) == ["acme", "anonymous", "anonymous"]
