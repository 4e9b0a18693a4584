"""Tests for gateway/routing/context.py and gateway/api/route.py: start-up and the dry run."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from embedder_worker.client import EmbedderPool, EmbedderUnavailable
from embedder_worker.model import OnnxEmbedder
from embedder_worker.settings import EmbedderSettings
from gateway.api.route import route_dry_run
from gateway.app import errors_middleware
from gateway.core.appkeys import SETTINGS
from gateway.core.config import parse
from gateway.core.routing_settings import RoutingSettings
from gateway.core.toml_table import ConfigError
from gateway.observability.metrics import setup_metrics
from gateway.routing.context import (
    ROUTER,
    SIGNALS,
    RoutingConfig,
    configure,
    decide,
    prompt_vector,
    routing_context,
)
from gateway.tenants import context as tenants
from gateway.upstream.appkeys import CATALOG, FAILOVER
from gateway.upstream.catalog import Catalog
from gateway.upstream.failover import Failover

pytest_plugins = ["tests.routing_fixtures"]

FloatArray = npt.NDArray[np.float32]


class InProcessPool(EmbedderPool):
    """The pool's interface over the in-process model; ``up`` False plays a dead worker."""

    def __init__(self, model: OnnxEmbedder, up: bool = True) -> None:
        super().__init__()
        self.model = model
        self.up = up
        self.texts = 0

    @property
    def ready(self) -> bool:
        return self.up

    async def embed(self, texts: Sequence[str]) -> FloatArray:
        if not self.up:
            raise EmbedderUnavailable("no embedder worker is live")
        self.texts += len(texts)
        vectors: FloatArray = self.model.embed(list(texts))
        return vectors

    async def embed_one(self, text: str) -> FloatArray:
        vector: FloatArray = (await self.embed([text]))[0]
        return vector

    async def wait_live(self, count: int = 1) -> None:
        """Up or down from the start: there is nothing to wait for."""


POOL = web.AppKey("test_embedder_pool", EmbedderPool)
AppFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def routes_file(tmp_path: Path) -> Path:
    from tests.routing_fixtures import SMALL_ROUTES

    path = tmp_path / "routes.toml"
    path.write_text(SMALL_ROUTES)
    return path


def build_app(tmp_path: Path, routes_file: Path, pool: EmbedderPool | None,
              model_dir: Path) -> web.Application:
    settings = parse(
        {"providers": [{"name": "demo", "kind": "demo"}],
         "models": [{"name": "small", "provider": "demo", "tier": "cheap"},
                    {"name": "big", "provider": "demo", "tier": "reasoning"}],
         "embedder": {"enabled": False}, "server": {"data_dir": str(tmp_path / "data")},
         "tenants": {"require_keys": False, "bootstrap": False, "tokenizer": ""}},
        env={}, base_dir=tmp_path, source="<test>",
    )
    app = web.Application(middlewares=[errors_middleware])
    app[SETTINGS] = settings
    catalog = app[CATALOG] = Catalog.from_settings(settings)
    app[FAILOVER] = Failover(catalog.deployments, {}, settings.failover)
    if pool is not None:
        app[POOL] = pool
    configure(app, RoutingConfig(
        settings=RoutingSettings(routes_file=routes_file, aliases=("auto", "router")),
        data_dir=tmp_path / "data", tiers=("cheap", "reasoning"),
        embedder=EmbedderSettings(model_dir=model_dir), pool_key=POOL,
    ))
    tenants.configure(app, settings)
    setup_metrics(app, settings.observability)
    app.router.add_post("/v1/route", route_dry_run)
    return app


@pytest.fixture
def make_app(aiohttp_client: Any, tmp_path: Path, routes_file: Path,
             routing_model_dir: Path) -> AppFactory:
    async def make(pool: EmbedderPool | None) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = await aiohttp_client(
            build_app(tmp_path, routes_file, pool, routing_model_dir))
        await client.app[ROUTER].loaded.wait()  # trained in the background after start-up
        return client

    return make


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


async def test_the_dry_run_explains_a_decision(make_app: AppFactory,
                                               onnx_embedder: OnnxEmbedder) -> None:
    client = await make_app(InProcessPool(onnx_embedder))
    resp = await client.post("/v1/route", json=chat("write a python function that parses csv"))
    assert resp.status == 200
    body = await resp.json()
    assert body["route"] == "code" and body["tier"] == "reasoning"
    assert body["deployments"] == ["demo/big"] and body["escalation"] == []
    assert body["routes"][0]["route"] == "code" and len(body["routes"]) == 3
    assert resp.headers["x-gateway-route"] == "code"
    assert resp.headers["x-gateway-tier"] == "reasoning"
    assert "x-gateway-route-score" in resp.headers and "x-gateway-route-margin" in resp.headers
    greeting = await (await client.post("/v1/route", json=chat("hello there!",
                                                               model="router"))).json()
    assert greeting["tier"] == "cheap" and greeting["escalation"] == ["reasoning"]


async def test_an_explicit_model_skips_the_router(make_app: AppFactory,
                                                 onnx_embedder: OnnxEmbedder) -> None:
    client = await make_app(InProcessPool(onnx_embedder))
    body = await (await client.post("/v1/route", json=chat("hi", model="big"))).json()
    assert body == {"object": "route.decision", "routed": False, "model": "big",
                    "deployments": ["demo/big"]}
    missing = await client.post("/v1/route", json=chat("hi", model="nope"))
    assert missing.status == 404


async def test_with_the_embedder_down_routing_takes_the_default_tier(
    make_app: AppFactory, onnx_embedder: OnnxEmbedder
) -> None:
    pool = InProcessPool(onnx_embedder, up=False)  # routes are embedded in-process at start
    client = await make_app(pool)
    assert client.app[ROUTER].current.classifier is not None and pool.texts == 0
    resp = await client.post("/v1/route", json=chat("write a python function"))
    body = await resp.json()
    assert (body["route"], body["tier"], body["reason"]) == (None, "cheap", "no_embedding")
    assert resp.headers["x-gateway-route-reason"].startswith("no_embedding")


async def test_utterance_vectors_are_embedded_once_across_restarts(
    tmp_path: Path, routes_file: Path, routing_model_dir: Path, onnx_embedder: OnnxEmbedder
) -> None:
    for expected in (24, 0):
        pool = InProcessPool(onnx_embedder)
        app = build_app(tmp_path, routes_file, pool, routing_model_dir)
        context = routing_context(app)
        await anext(context)
        await app[ROUTER].loaded.wait()
        assert pool.texts == expected
        await anext(context, None)  # the cleanup half
    assert (tmp_path / "data" / "routing" / "vectors.npz").exists()


async def test_decisions_are_recorded_as_signals(
    tmp_path: Path, routes_file: Path, routing_model_dir: Path, onnx_embedder: OnnxEmbedder
) -> None:
    from gateway.core.chat import Message

    app = build_app(tmp_path, routes_file, InProcessPool(onnx_embedder), routing_model_dir)
    context = routing_context(app)
    await anext(context)
    await app[ROUTER].loaded.wait()
    assert SIGNALS in app
    from gateway.core.chat import ChatRequest

    request = ChatRequest("auto", (Message("user", "translate cat into french"),), False, False,
                          None, None, None, 1, None, (), (), None, None, {})
    text, vector = await prompt_vector(app, request)
    decision = decide(app, "req_9", text, vector)
    assert decision.ranked[0].route == "translate"
    await anext(context, None)  # the cleanup half: the store writes what is queued
    with sqlite3.connect(tmp_path / "data" / "signals.sqlite3") as db:
        assert db.execute("SELECT request_id, route FROM signals").fetchall() == [
            ("req_9", "translate")]
        assert db.execute("SELECT count(*) FROM vectors").fetchone() == (1,)


async def test_a_bad_routes_file_fails_start_up_naming_the_place(
    tmp_path: Path, routes_file: Path, routing_model_dir: Path
) -> None:
    routes_file.write_text('[[routes]]\nname = "x"\ntier = "gold"\nutterances = ["a"]\n')
    context = routing_context(build_app(tmp_path, routes_file, None, routing_model_dir))
    with pytest.raises(ConfigError, match=r"routes\.toml: routes\[0\]\.tier"):
        await anext(context)
