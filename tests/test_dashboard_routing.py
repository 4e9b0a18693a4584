"""The dashboard's routing page (gateway/observability/dashboard/routing.py, routing_queries.py):
the figures it shows for a scripted history written through the real ledger and signal store."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.observability.dashboard import format as fmt
from gateway.observability.dashboard.routing import SIGNALS_READER
from tests.observability_fixtures import Client, login, page_metrics
from tests.routing_dashboard_fixtures import routing_dashboard_app, write_routing_history


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path) -> Client:
    client: Client = await aiohttp_client(routing_dashboard_app(tmp_path))
    assert (await login(client)).status == 303
    return client


async def _page(client: Client, path: str = "/dashboard/routing") -> str:
    response = await client.get(path, allow_redirects=False)
    assert response.status == 200, await response.text()
    return await response.text()


async def test_the_routing_page_needs_a_session(aiohttp_client: Any, tmp_path: Path) -> None:
    client: Client = await aiohttp_client(routing_dashboard_app(tmp_path))
    response = await client.get("/dashboard/routing", allow_redirects=False)
    assert response.status in (302, 303)
    assert response.headers["Location"].startswith("/dashboard/login")


async def test_the_routing_page_shows_tier_share_escalations_and_feedback(
    client: Client,
) -> None:
    history = await write_routing_history(client.app)
    shown = page_metrics(await _page(client))
    assert shown["routed"] == fmt.num(history.routed)
    assert shown["strongest-share"] == fmt.pct(
        history.reasoning / (history.cheap + history.reasoning))
    assert shown["routing-escalation-rate"] == fmt.pct(history.escalated / history.routed)
    assert shown["feedback-good"] == fmt.num(history.good)
    assert shown["feedback-bad"] == fmt.num(history.bad)
    assert shown["client-retries"] == fmt.num(history.retries)
    assert shown["learned-share"] == fmt.pct(history.learned / history.decisions)


async def test_the_page_lists_where_the_learned_policy_overrode_the_intent_routes(
    client: Client,
) -> None:
    history = await write_routing_history(client.app)
    html = await _page(client, "/dashboard/routing?window=1h")
    assert f'data-override="{history.overridden_route}:cheap:reasoning"' in html
    assert 'data-override="chit_chat:cheap:cheap"' not in html  # it agreed: not an override
    assert 'data-reason="empty_answer"' in html


async def test_the_routing_page_works_with_nothing_recorded(client: Client) -> None:
    for window in ("1h", "24h", "7d"):
        shown = page_metrics(await _page(client, f"/dashboard/routing?window={window}"))
        assert shown["routed"] == "0" and shown["strongest-share"] == fmt.DASH
        assert shown["learner-remembered"] == "off"


async def test_the_signal_store_is_read_through_a_read_only_connection(client: Client) -> None:
    reader = client.app[SIGNALS_READER]
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        await reader.execute("DELETE FROM signals")
