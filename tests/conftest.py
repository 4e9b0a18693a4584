"""Shared fixtures: fake providers started in-process, and gateways configured against them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.core.config import Settings, parse
from tests.fake_openai import FakeOpenAI, fake_openai_app

ROOT = Path(__file__).resolve().parent.parent

Config = dict[str, Any]


def openai_provider(name: str, url: str, **extra: Any) -> Config:
    return {"name": name, "kind": "openai", "base_url": url, **extra}


def model(name: str, provider: str, tier: str = "cheap", **extra: Any) -> Config:
    return {"name": name, "provider": provider, "tier": tier, **extra}


def settings_from(config: Config, tmp_path: Path, env: dict[str, str] | None = None) -> Settings:
    config = {**config}
    config.setdefault("server", {}).setdefault("data_dir", str(tmp_path / "data"))
    config.setdefault("embedder", {"enabled": False})
    # Proxy tests run keyless (the anonymous tenant); tests of keys and limits set their own.
    config.setdefault("tenants", {"require_keys": False, "bootstrap": False})
    # Repeated prompts must reach the fake providers; the cache's own tests turn it on.
    config.setdefault("cache", {"enabled": False})
    return parse(config, env=env or {}, base_dir=tmp_path, source="<test>")


@pytest.fixture
async def fake_openai(aiohttp_server: Any) -> tuple[FakeOpenAI, str]:
    fake = FakeOpenAI()
    server: TestServer = await aiohttp_server(fake_openai_app(fake))
    yield fake, str(server.make_url("/v1"))
    fake.release.set()


GatewayFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def make_gateway(aiohttp_client: Any, tmp_path: Path) -> GatewayFactory:
    async def make(config: Config, env: dict[str, str] | None = None) -> TestClient:
        app = create_app(settings_from(config, tmp_path, env))
        # aiohttp's TestServer, like ``gateway serve``, cancels a handler whose client left.
        client: TestClient = await aiohttp_client(app)
        return client

    return make


@pytest.fixture
async def one_upstream(
    fake_openai: tuple[FakeOpenAI, str], make_gateway: GatewayFactory
) -> tuple[TestClient, FakeOpenAI]:
    """A gateway with one OpenAI-compatible deployment, ``small``, on the fake provider."""
    fake, url = fake_openai
    client = await make_gateway(
        {"providers": [openai_provider("p1", url)],
         "models": [model("small", "p1", upstream_model="up-small")]}
    )
    return client, fake
