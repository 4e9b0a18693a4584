"""Tests for gateway/routing/follow.py and POST /admin/routes/reload: routes follow the fleet."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.routing.context import ROUTER
from tests.conftest import GatewayFactory, model, openai_provider
from tests.redis_server import RedisServer
from tests.tasks import until as until_within
from tests.tenant_fixtures import ADMIN_KEY, GATEWAY_ENV

WAIT_S = 10.0
until = functools.partial(until_within, timeout_s=WAIT_S)

ROUTES = """
[[routes]]
name = "greeting"
tier = "cheap"
utterances = ["hi", "hello there"]
"""
MORE_ROUTES = ROUTES + """
[[routes]]
name = "code"
tier = "cheap"
utterances = ["write a python function", "fix this SQL query"]
"""


def config(routes: Path, redis_url: str, **cluster: Any) -> dict[str, Any]:
    return {
        "providers": [openai_provider("p", "http://127.0.0.1:9/v1")],
        "models": [model("small", "p")],
        "routing": {"routes_file": str(routes)},
        "cluster": {"redis_url": redis_url, **cluster},
    }


def route_names(client: TestClient) -> tuple[str, ...]:
    return client.server.app[ROUTER].current.routes.names


async def test_a_reload_through_one_replica_reaches_the_others(
    tmp_path: Path, make_gateway: GatewayFactory, redis_server: RedisServer,
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    # An hour between re-reads: only the notice can bring the change.
    a = await make_gateway(config(routes, redis_server.url, resync_interval_s=3600), GATEWAY_ENV)
    b = await make_gateway(config(routes, redis_server.url, resync_interval_s=3600), GATEWAY_ENV)
    await until(lambda: route_names(b) == ("greeting",), "b to load its routes")
    routes.write_text(MORE_ROUTES)
    resp = await a.post("/admin/routes/reload", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert resp.status == 200
    body = await resp.json()
    assert body["routes"] == ["greeting", "code"] and body["replicas_notified"]
    assert route_names(a) == ("greeting", "code")
    await until(lambda: route_names(b) == ("greeting", "code"), "b to reload on the notice")


async def test_a_changed_file_is_reloaded_at_the_next_re_read_without_a_notice(
    tmp_path: Path, make_gateway: GatewayFactory, redis_server: RedisServer,
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    b = await make_gateway(config(routes, redis_server.url, resync_interval_s=0.1), GATEWAY_ENV)
    await until(lambda: route_names(b) == ("greeting",), "b to load its routes")
    routes.write_text(MORE_ROUTES)
    await until(lambda: route_names(b) == ("greeting", "code"), "the re-read to see the file")


async def test_a_bad_routes_file_is_refused_and_the_router_stays(
    tmp_path: Path, make_gateway: GatewayFactory, redis_server: RedisServer,
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    a = await make_gateway(config(routes, redis_server.url), GATEWAY_ENV)
    await until(lambda: route_names(a) == ("greeting",), "a to load its routes")
    routes.write_text('[[routes]]\nname = "x"\ntier = "nope"\nutterances = ["a"]\n')
    resp = await a.post("/admin/routes/reload", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert resp.status == 400
    assert "no model serves tier 'nope'" in (await resp.json())["error"]["message"]
    assert route_names(a) == ("greeting",)


async def test_reloading_routes_needs_the_admin_key(
    tmp_path: Path, make_gateway: GatewayFactory, redis_server: RedisServer,
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES)
    a = await make_gateway(config(routes, redis_server.url), GATEWAY_ENV)
    resp = await a.post("/admin/routes/reload")
    assert resp.status == 401
