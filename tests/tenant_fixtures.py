"""Helpers for the tenants tests: a store in tmp_path, principals, chat requests, a tenants app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.api.admin import add_admin_routes
from gateway.app import errors_middleware
from gateway.core.appkeys import SETTINGS
from gateway.core.chat import ChatRequest, parse_chat_request
from gateway.core.config import Settings, parse
from gateway.core.tenant_settings import LedgerSettings, Limits, TenantSettings
from gateway.tenants.auth import Principal
from gateway.tenants.context import CONFIG_KEY, TenantsConfig, tenants_context
from gateway.tenants.store import Store
from tests.conftest import model, openai_provider

ADMIN_KEY = "test-admin-key-0123456789abcdef"
SECRET = b"test-key-secret-0123456789abcdef"
# The environment a gateway with tenants reads its admin key and key secret from.
GATEWAY_ENV = {"GATEWAY_ADMIN_KEY": ADMIN_KEY, "GATEWAY_KEY_SECRET": SECRET.decode()}


@asynccontextmanager
async def open_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(tmp_path / "data" / "gateway.sqlite3")
    try:
        yield store
    finally:
        await store.close()


def principal(
    tenant: str = "acme",
    key_id: str = "key_1",
    tenant_limits: Limits | None = None,
    key_limits: Limits | None = None,
) -> Principal:
    return Principal(tenant, key_id, "gw-abcdefgh", tenant_limits or Limits(),
                     key_limits or Limits())


def chat(text: str = "Hello there", *, model: str = "auto", max_tokens: int | None = 100,
         n: int = 1) -> ChatRequest:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if n != 1:
        body["n"] = n
    return parse_chat_request(orjson.dumps(body))


def tenant_settings(**overrides: Any) -> TenantSettings:
    values: dict[str, Any] = {
        "admin_key": ADMIN_KEY,
        "key_secret": SECRET.decode(),
        "tokenizer": None,
        "bootstrap": False,
        "ledger": LedgerSettings(flush_interval_s=3600.0),
    }
    values.update(overrides)
    return TenantSettings(**values)


def tenants_app(tmp_path: Path, settings: TenantSettings | None = None) -> web.Application:
    """An app with just the tenants' cleanup context and the admin routes, reading bodies as
    the gateway's app does (no aiohttp size limit; ``server.max_body_bytes`` applies)."""
    app = web.Application(middlewares=[errors_middleware], client_max_size=0)
    app[SETTINGS] = gateway_settings(tmp_path)
    app[CONFIG_KEY] = TenantsConfig(settings or tenant_settings(), tmp_path / "data")
    app.cleanup_ctx.append(tenants_context)
    add_admin_routes(app)
    return app


def gateway_settings(tmp_path: Path) -> Settings:
    """Whole-gateway settings (a demo provider) with the data folder in ``tmp_path``."""
    config = {
        "server": {"data_dir": str(tmp_path / "data")},
        "providers": [{"name": "demo", "kind": "demo"}],
        "models": [{"name": "m", "provider": "demo"}],
        "embedder": {"enabled": False},
    }
    return parse(config, env={}, base_dir=tmp_path, source="<test>")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def priced_gateway_with_key(make_gateway: Any, url: str,
                                  requests_per_minute: int) -> tuple[TestClient, str]:
    """A gateway that requires keys, with model ``small`` on ``url`` at $1/$2 per million
    tokens in/out, and the key of tenant ``acme`` limited to ``requests_per_minute``."""
    client: TestClient = await make_gateway({
        "providers": [openai_provider("p1", url)],
        "models": [model("small", "p1", input_price_per_mtok=1.0, output_price_per_mtok=2.0)],
        "tenants": {"bootstrap": False, "tokenizer": ""},
    }, env=GATEWAY_ENV)
    key = await new_tenant_key(client, "acme", limits={"requests_per_minute": requests_per_minute})
    return client, key


async def new_tenant_key(client: TestClient, name: str, **tenant: Any) -> str:
    """Create tenant ``name`` (with ``tenant``'s fields) through the admin API; a new key for it."""
    admin = bearer(ADMIN_KEY)
    made = await client.post("/admin/tenants", headers=admin, json={"name": name, **tenant})
    assert made.status == 201
    key = await client.post(f"/admin/tenants/{name}/keys", headers=admin)
    return str((await key.json())["key"])
