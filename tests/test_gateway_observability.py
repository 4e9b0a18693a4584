"""Metrics and the dashboard after a scripted mix of real chat requests: the figures agree with the
ledger (gateway/pipeline/accounting.py, gateway/observability/metrics.py,
gateway/observability/dashboard/)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.tenants.context import LEDGER_KEY, STORE_KEY
from gateway.tenants.ledger import recent
from tests.conftest import GatewayFactory
from tests.fake_openai import FakeOpenAI, Reply
from tests.observability_fixtures import login, page_metrics
from tests.tenant_fixtures import bearer, priced_gateway_with_key


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


async def test_metrics_and_dashboard_agree_with_the_ledger(
    fake_openai: tuple[FakeOpenAI, str], make_gateway: GatewayFactory
) -> None:
    fake, url = fake_openai
    client, key = await priced_gateway_with_key(make_gateway, url, requests_per_minute=6)
    fake.script.extend([Reply(), Reply(), Reply(kind="status", status=500), Reply(), Reply()])
    statuses = []
    for i in range(7):  # 5 answered (one of them a 502), then 2 refused by the limit
        resp = await client.post("/v1/chat/completions", headers=bearer(key), json={
            "model": "small", "stream": i == 3,
            "messages": [{"role": "user", "content": f"question {i}"}]})
        await resp.read()
        statuses.append(resp.status)
    assert statuses == [200, 200, 502, 200, 200, 200, 429]
    app = client.server.app
    await app[LEDGER_KEY].flush()
    rows = await recent(app[STORE_KEY], tenant="acme")
    by_status: dict[int, int] = {}
    for row in rows:
        by_status[row.status] = by_status.get(row.status, 0) + 1
    assert sum(by_status.values()) == sum(1 for s in statuses if s != 429)

    text = await (await client.get("/metrics")).text()
    requests = _samples(text, "gateway_requests_total")
    counted: dict[str, float] = {}
    for labels, value in requests.items():
        status = dict(labels)["status"]
        counted[status] = counted.get(status, 0) + value
    assert counted == {str(s): float(n) for s, n in by_status.items()}
    refusals = _samples(text, "gateway_refusals_total")
    assert sum(refusals.values()) == statuses.count(429)
    cost = sum(_samples(text, "gateway_cost_usd_total").values())
    assert abs(cost - sum(r.cost for r in rows)) < 1e-9

    await login(client)
    page = page_metrics(await (await client.get("/dashboard")).text())
    assert page["requests"] == str(len(rows))
    errors = sum(n for s, n in by_status.items() if s >= 400)
    assert page["error-rate"] == f"{errors / len(rows) * 100:.1f}%"
    spend = sum(r.cost for r in rows)
    assert float(page["spend-today"].lstrip("$")) == pytest.approx(spend, rel=0.01)
