"""Tests for gateway/pipeline/accounting.py through a whole gateway: every request ends on the
record, as a usage row or a refusal row, with an access line and a metric, and the dashboard
shows it."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.observability.access_log import ACCESS_LOGGER
from gateway.observability.dashboard.refusals import UNAUTHENTICATED, latest_refusals
from gateway.tenants.context import LEDGER_KEY, STORE_KEY
from gateway.tenants.ledger import recent
from gateway.tenants.store import Store
from tests.conftest import GatewayFactory, model, openai_provider
from tests.fake_openai import FakeOpenAI, Reply
from tests.observability_fixtures import login, page_metrics
from tests.tenant_fixtures import GATEWAY_ENV, bearer, new_tenant_key

CHAT = "/v1/chat/completions"


def _ask(text: str = "hello") -> dict[str, Any]:
    return {"model": "small", "messages": [{"role": "user", "content": text}]}


async def _keyed_gateway(make_gateway: GatewayFactory, url: str) -> tuple[Any, str]:
    client = await make_gateway({
        "server": {"max_body_bytes": 2000},
        "providers": [openai_provider("p1", url)],
        "models": [model("small", "p1")],
        "tenants": {"bootstrap": False, "tokenizer": ""},
    }, env=GATEWAY_ENV)
    return client, await new_tenant_key(client, "acme", limits={"requests_per_minute": 2})


async def test_every_refused_request_is_recorded_with_its_tenant_reason_and_api(
    fake_openai: tuple[FakeOpenAI, str], make_gateway: GatewayFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, url = fake_openai
    client, key = await _keyed_gateway(make_gateway, url)
    acme = bearer(key)
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        sent = [
            await client.post(CHAT, json=_ask()),  # 401: no key
            await client.post(CHAT, headers=acme, json={"model": "small"}),  # 400: no messages
            await client.post(CHAT, headers=acme, json=_ask("x" * 5000)),  # 413
            await client.get("/v1/no-such-thing", headers=acme),  # 404: no route
            await client.post(CHAT, headers=acme, json=_ask()),  # 200
            await client.post(CHAT, headers=acme, json=_ask()),  # 200
            await client.post(CHAT, headers=acme, json=_ask()),  # 429: over 2 a minute
        ]
    assert [r.status for r in sent] == [401, 400, 413, 404, 200, 200, 429]
    ids = [r.headers["x-request-id"] for r in sent]
    app = client.server.app
    await app[LEDGER_KEY].flush()
    store: Store = app[STORE_KEY]
    refusals = {r.request_id: r for r in await latest_refusals(store)}
    assert set(refusals) == {ids[i] for i in (0, 1, 2, 3, 6)}
    want = {0: (None, 401, "invalid_api_key", CHAT),
            1: ("acme", 400, "invalid_request_error", CHAT),
            2: ("acme", 413, "request_too_large", CHAT),
            3: (None, 404, "not_found_error", "(no route)"),
            6: ("acme", 429, "rate_limit_exceeded", CHAT)}
    for i, (tenant, status, code, api) in want.items():
        got = refusals[ids[i]]
        assert (got.tenant, got.status, got.code, got.api) == (tenant, status, code, api)
    assert refusals[ids[1]].param == "messages"
    assert {r.request_id for r in await recent(store)} == {ids[4], ids[5]}  # no row twice

    lines = {(line := json.loads(r.getMessage()))["request_id"]: line for r in caplog.records
             if r.name == ACCESS_LOGGER}
    assert set(lines) == set(ids)
    assert lines[ids[6]]["tenant"] == "acme" and lines[ids[6]]["error"] == "rate_limit_exceeded"
    assert lines[ids[0]]["tenant"] is None and key not in json.dumps(list(lines.values()))

    text = await (await client.get("/metrics")).text()
    counted = {tuple(sorted(s.labels.items())): s.value
               for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "gateway_refusals_total"}
    assert counted[(("kind", "rate_limit"), ("tenant", "acme"))] == 1
    assert counted[(("kind", "too_large"), ("tenant", "acme"))] == 1
    assert counted[(("kind", "authentication"), ("tenant", "none"))] >= 1

    await login(client)
    overview = page_metrics(await (await client.get("/dashboard")).text())
    assert overview["refused"] == "5"
    tenants = await (await client.get("/dashboard/tenants")).text()
    assert 'data-field="refused-today"><a class="bad-text"' in tenants
    assert page_metrics(tenants)["refused-unauthenticated"] == "2"
    page = await (await client.get("/dashboard/requests?tenant=acme")).text()
    assert page_metrics(page)["refusal-rows"] == "3"
    assert f'data-refusal-id="{ids[6]}" data-code="rate_limit_exceeded"' in page
    nobody = await (await client.get(f"/dashboard/requests?tenant={UNAUTHENTICATED}")).text()
    assert page_metrics(nobody)["refusal-rows"] == "2"


async def test_refusals_survive_a_restart(
    fake_openai: tuple[FakeOpenAI, str], make_gateway: GatewayFactory
) -> None:
    _, url = fake_openai
    client, _ = await _keyed_gateway(make_gateway, url)
    refused = await client.post(CHAT, json=_ask(), headers=bearer("gw-not-a-key"))
    assert refused.status == 401
    path = client.server.app[STORE_KEY].path
    await client.close()  # the ledger writes what it holds on the way out
    store = await Store.open(path)
    try:
        (row,) = await latest_refusals(store)
    finally:
        await store.close()
    assert row.request_id == refused.headers["x-request-id"] and row.status == 401


async def test_failed_attempts_record_their_deployment_for_the_providers_page(
    fake_openai: tuple[FakeOpenAI, str], make_gateway: GatewayFactory
) -> None:
    fake, url = fake_openai
    client = await make_gateway({
        "providers": [openai_provider("p1", url), openai_provider("p2", url)],
        "models": [model("small", "p1", upstream_model="a"),
                   model("small", "p2", upstream_model="b")],
        "tenants": {"bootstrap": False, "tokenizer": "", "require_keys": False},
    }, env=GATEWAY_ENV)
    fake.script.extend([Reply(kind="status", status=500), Reply(),
                        Reply(kind="status", status=500), Reply(kind="status", status=500)])
    answered = await client.post(CHAT, json=_ask())
    failed = await client.post(CHAT, json=_ask())
    assert (answered.status, failed.status) == (200, 502)
    app = client.server.app
    await app[LEDGER_KEY].flush()
    rows = {r.request_id: r for r in await recent(app[STORE_KEY])}
    first = rows[answered.headers["x-request-id"]]
    other = ({"p1/a", "p2/b"} - {answered.headers["x-gateway-deployment"]}).pop()
    assert first.deployment == answered.headers["x-gateway-deployment"]
    assert first.answered_model == "small"
    both = [tuple(r) for r in await app[STORE_KEY].db.execute_fetchall(
        "SELECT request_id, deployment FROM failed_attempts ORDER BY id")]
    assert both[0] == (first.request_id, other)
    assert sorted(d for rid, d in both if rid == failed.headers["x-request-id"]) == [
        "p1/a", "p2/b"]
    await login(client)
    page = await (await client.get("/dashboard/providers")).text()
    for deployment, errors in ((other, 2), (answered.headers["x-gateway-deployment"], 1)):
        row = page.split(f'data-deployment="{deployment}"', 1)[1]
        assert f'data-field="errors"><span class="bad-text">{errors}</span>' in row
