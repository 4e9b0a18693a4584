"""The gateway on a shared PostgreSQL, in-process (gateway/app.py with ``[cluster]``): tenants,
keys and usage through the admin API land in the database; a database that goes away costs the
admin API a 503 in OpenAI's error JSON, never a 500, and chat requests keep being answered."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from gateway.tenants.context import LEDGER_KEY
from tests.conftest import GatewayFactory, model, openai_provider
from tests.fake_openai import FakeOpenAI
from tests.observability_fixtures import login
from tests.tenant_fixtures import ADMIN_KEY, GATEWAY_ENV, bearer, new_tenant_key

pytest_plugins = ["tests.postgres_fixtures"]


async def shared_gateway(make_gateway: GatewayFactory, upstream: str, url: str) -> TestClient:
    return await make_gateway(
        {"providers": [openai_provider("p1", upstream)],
         "models": [model("small", "p1", input_price_per_mtok=1.0, output_price_per_mtok=2.0)],
         "tenants": {"bootstrap": False}},
        env={**GATEWAY_ENV, "GATEWAY_DATABASE_URL": url},
    )


async def ask(client: TestClient, key: str) -> Any:
    return await client.post("/v1/chat/completions", headers=bearer(key), json={
        "model": "small", "messages": [{"role": "user", "content": "Hello"}]})


async def test_usage_through_the_gateway_is_in_the_shared_ledger_and_on_the_dashboard(
    database_url: str, make_gateway: GatewayFactory, fake_openai: tuple[FakeOpenAI, str],
) -> None:
    _, upstream = fake_openai
    client = await shared_gateway(make_gateway, upstream, database_url)
    key = await new_tenant_key(client, "acme")
    for _ in range(3):
        assert (await ask(client, key)).status == 200
    assert (await ask(client, "gw-not-a-key")).status == 401  # a refusal, on the record too
    usage = await client.get("/admin/usage", headers=bearer(ADMIN_KEY))
    assert usage.status == 200
    (acme,) = (await usage.json())["tenants"]
    assert acme["tenant"] == "acme" and acme["today"]["requests"] == 3
    assert acme["today"]["cost"] > 0
    assert (await login(client)).status == 303
    for page in ("/dashboard", "/dashboard?window=24h", "/dashboard?window=7d",
                 "/dashboard/providers", "/dashboard/tenants", "/dashboard/requests?tenant=acme"):
        resp = await client.get(page)
        assert resp.status == 200, (page, await resp.text())
        assert not page.startswith("/dashboard/") or "acme" in await resp.text() \
            or page == "/dashboard/providers"
        assert not page.startswith("/dashboard?") or "invalid_api_key" in await resp.text()
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM usage WHERE tenant = 'acme'") == 3
        assert await conn.fetchval("SELECT sum(requests) FROM usage_hourly") == 3
        assert await conn.fetchval("SELECT code FROM refusals") == "invalid_api_key"
        assert await conn.fetchval("SELECT count(*) FROM api_keys") == 1
    finally:
        await conn.close()


async def test_a_vanished_database_is_a_503_for_the_admin_api_and_chat_goes_on(
    postgres_server: Any, database_url: str, make_gateway: GatewayFactory,
    fake_openai: tuple[FakeOpenAI, str],
) -> None:
    _, upstream = fake_openai
    client = await shared_gateway(make_gateway, upstream, database_url)
    key = await new_tenant_key(client, "acme")
    admin = await asyncpg.connect(postgres_server.url())
    try:
        await admin.execute(f'DROP DATABASE "{database_url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()
    assert (await ask(client, key)).status == 200  # keys and limits are held in memory
    for method, path in (("GET", "/admin/usage"), ("GET", "/admin/tenants"),
                         ("POST", "/admin/tenants")):
        resp = await client.request(method, path, headers=bearer(ADMIN_KEY), json={"name": "b"})
        assert resp.status == 503, (path, await resp.text())
        error = (await resp.json())["error"]
        assert error["type"] == "service_unavailable" and "database" in error["message"]
    assert client.app[LEDGER_KEY].pending >= 1  # kept for when the database is back
