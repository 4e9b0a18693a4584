"""``POST /v1/feedback`` (gateway/api/feedback.py): who may rate which answer, what bad input gets,
and that feedback is written to the signal store, cached answers and restarts included (an
escalated answer's score read back after a restart is learned as observed after the escalation)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.cache.context import CACHE
from gateway.routing.context import SIGNALS
from gateway.routing.learned.context import LEARNER
from tests.conftest import GatewayFactory, model, openai_provider
from tests.fake_openai import FakeOpenAI
from tests.tenant_fixtures import GATEWAY_ENV, bearer, new_tenant_key
from tests.test_gateway_learning import (
    TAX_SEEN,
    Tiers,
    fakes,  # noqa: F401  (the two-tier fakes fixture)
)
from tests.test_gateway_learning import _ask as ask_auto
from tests.test_gateway_learning import _config as learning_config
from tests.test_gateway_learning import _gateway as learning_gateway

Keyed = tuple[TestClient, str, str]


def _config(url: str, **extra: Any) -> dict[str, Any]:
    return {"providers": [openai_provider("p1", url)],
            "models": [model("small", "p1", "cheap", output_price_per_mtok=1.0)],
            "tenants": {"bootstrap": False, "tokenizer": ""}, **extra}


async def _keyed(make_gateway: GatewayFactory, url: str, **extra: Any) -> Keyed:
    client = await make_gateway(_config(url, **extra), env=GATEWAY_ENV)
    return client, await new_tenant_key(client, "acme"), await new_tenant_key(client, "globex")


@pytest.fixture
async def keyed(fake_openai: tuple[FakeOpenAI, str], make_gateway: GatewayFactory) -> Keyed:
    return await _keyed(make_gateway, fake_openai[1])


async def _ask(client: TestClient, key: str, text: str = "What is VAT?",
               request_id: str | None = None) -> Any:
    headers = {**bearer(key), **({"x-request-id": request_id} if request_id else {})}
    resp = await client.post("/v1/chat/completions", headers=headers, json={
        "model": "small", "messages": [{"role": "user", "content": text}]})
    assert resp.status == 200, await resp.text()
    await resp.read()
    return resp


async def _feedback(client: TestClient, key: str, body: Any) -> Any:
    return await client.post("/v1/feedback", headers=bearer(key), json=body)


async def _feedback_rows(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    store = client.app[SIGNALS]
    await store.flush()
    with sqlite3.connect(store.path) as db:
        rows = db.execute("SELECT request_id, tier, detail FROM signals WHERE kind = 'feedback' "
                          "ORDER BY id").fetchall()
    return [(r, t, json.loads(d)) for r, t, d in rows]


async def test_a_tenant_rates_its_own_answer_and_the_score_is_recorded(keyed: Keyed) -> None:
    client, acme, _ = keyed
    request_id = (await _ask(client, acme)).headers["x-request-id"]
    resp = await _feedback(client, acme, {"request_id": request_id, "score": "bad",
                                          "comment": "wrong rate"})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["request_id"] == request_id and body["score"] == 0.0 and body["tier"] == "cheap"
    assert body["counted"] is True
    again = await _feedback(client, acme, {"request_id": request_id, "score": "bad"})
    assert (await again.json())["counted"] is False  # recorded, but learned from only once
    (rid, tier, detail), (_, _, repeated) = await _feedback_rows(client)
    assert (rid, tier) == (request_id, "cheap")
    assert detail["tenant"] == "acme" and detail["score"] == 0.0 and detail["counted"]
    assert detail["comment"] == "wrong rate" and not repeated["counted"]


async def test_a_numeric_score_is_kept_as_given(keyed: Keyed) -> None:
    client, acme, _ = keyed
    request_id = (await _ask(client, acme)).headers["x-request-id"]
    resp = await _feedback(client, acme, {"request_id": request_id, "score": 0.75})
    assert (await resp.json())["score"] == 0.75
    assert [d["score"] for _, _, d in await _feedback_rows(client)] == [0.75]


async def test_another_tenants_request_is_a_404_exactly_like_an_unknown_one(keyed: Keyed) -> None:
    client, acme, globex = keyed
    request_id = (await _ask(client, acme)).headers["x-request-id"]
    theirs = await _feedback(client, globex, {"request_id": request_id, "score": "good"})
    unknown = await _feedback(client, globex, {"request_id": "req_never_seen", "score": "good"})
    assert theirs.status == unknown.status == 404
    theirs_error, unknown_error = (await theirs.json())["error"], (await unknown.json())["error"]
    assert theirs_error["code"] == unknown_error["code"] == "request_not_found"
    assert theirs_error["type"] == unknown_error["type"] and theirs_error["param"] == "request_id"
    assert theirs_error["message"].replace(request_id, "ID") == \
        unknown_error["message"].replace("req_never_seen", "ID")
    assert await _feedback_rows(client) == []


async def test_the_same_client_chosen_id_is_rated_per_tenant(keyed: Keyed) -> None:
    client, acme, globex = keyed
    await _ask(client, acme, "What is VAT?", request_id="order-42")
    await _ask(client, globex, "Hi there", request_id="order-42")
    resp = await _feedback(client, globex, {"request_id": "order-42", "score": "good"})
    assert resp.status == 200
    ((_, _, detail),) = await _feedback_rows(client)
    assert detail["tenant"] == "globex"


async def test_feedback_without_a_key_is_refused(keyed: Keyed) -> None:
    client, acme, _ = keyed
    request_id = (await _ask(client, acme)).headers["x-request-id"]
    resp = await client.post("/v1/feedback", json={"request_id": request_id, "score": "good"})
    assert resp.status == 401
    assert (await resp.json())["error"]["type"] == "authentication_error"
    assert await _feedback_rows(client) == []


@pytest.mark.parametrize(("body", "param"), [
    ({"score": "good"}, "request_id"),
    ({"request_id": 42, "score": "good"}, "request_id"),
    ({"request_id": "", "score": "good"}, "request_id"),
    ({"request_id": "x" * 129, "score": "good"}, "request_id"),
    ({"request_id": "ID"}, "score"),
    ({"request_id": "ID", "score": "meh"}, "score"),
    ({"request_id": "ID", "score": 1.5}, "score"),
    ({"request_id": "ID", "score": -0.1}, "score"),
    ({"request_id": "ID", "score": True}, "score"),
    ({"request_id": "ID", "score": None}, "score"),
    ({"request_id": "ID", "score": "good", "comment": 7}, "comment"),
    ({"request_id": "ID", "score": "good", "comment": "x" * 2001}, "comment"),
    ({"request_id": "ID", "score": "good", "rating": 5}, "rating"),
])
async def test_bad_input_is_a_400_naming_the_field_and_nothing_is_recorded(
    keyed: Keyed, body: dict[str, Any], param: str
) -> None:
    client, acme, _ = keyed
    request_id = (await _ask(client, acme)).headers["x-request-id"]
    if body.get("request_id") == "ID":
        body = {**body, "request_id": request_id}
    resp = await _feedback(client, acme, body)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert param in error["message"]
    assert await _feedback_rows(client) == []


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b'"good"'])
async def test_a_body_that_is_not_a_json_object_is_a_400(keyed: Keyed, raw: bytes) -> None:
    client, acme, _ = keyed
    resp = await client.post("/v1/feedback", data=raw,
                             headers={**bearer(acme), "Content-Type": "application/json"})
    assert resp.status == 400
    assert (await resp.json())["error"]["type"] == "invalid_request_error"
    assert await _feedback_rows(client) == []


async def test_feedback_on_a_cached_answer_counts(
    fake_openai: tuple[FakeOpenAI, str], make_gateway: GatewayFactory
) -> None:
    fake, url = fake_openai
    client, acme, _ = await _keyed(make_gateway, url, cache={"enabled": True})
    await _ask(client, acme, "What is the capital of France?")
    await client.app[CACHE].flush()
    hit = await _ask(client, acme, "What is the capital of France?")
    assert hit.headers["x-gateway-cache"] == "hit" and len(fake.requests) == 1
    resp = await _feedback(client, acme, {"request_id": hit.headers["x-request-id"],
                                          "score": "good"})
    assert resp.status == 200
    assert (await resp.json())["cached"] is True
    ((_, tier, detail),) = await _feedback_rows(client)
    assert tier == "cheap" and detail["cached"] is True


async def test_an_answer_from_before_a_restart_can_still_be_rated(
    fake_openai: tuple[FakeOpenAI, str], make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    _, url = fake_openai
    client, acme, _ = await _keyed(make_gateway, url)
    request_id = (await _ask(client, acme)).headers["x-request-id"]
    await client.close()  # the app's cleanup writes the signals queued
    again = await make_gateway(_config(url), env=GATEWAY_ENV)
    resp = await _feedback(again, acme, {"request_id": request_id, "score": "good"})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["tier"] == "cheap"
    assert [r for r, _, _ in await _feedback_rows(again)] == [request_id]


async def test_feedback_past_the_keys_allowance_is_a_429_and_not_recorded(
    fake_openai: tuple[FakeOpenAI, str], make_gateway: GatewayFactory
) -> None:
    _, url = fake_openai
    client, acme, globex = await _keyed(
        make_gateway, url, routing={"outcomes": {"feedback_per_minute": 2}})
    request_id = (await _ask(client, acme)).headers["x-request-id"]
    for _ in range(2):
        ok = await _feedback(client, acme, {"request_id": request_id, "score": "good"})
        assert ok.status == 200, await ok.text()
    refused = await _feedback(client, acme, {"request_id": request_id, "score": "bad"})
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) >= 1
    error = (await refused.json())["error"]
    assert error["type"] == "rate_limit_error" and "2 a minute" in error["message"]
    assert [d["score"] for _, _, d in await _feedback_rows(client)] == [1.0, 1.0]
    # Another key has an allowance of its own.
    other = await _feedback(client, globex, {"request_id": "unknown", "score": "good"})
    assert other.status == 404


async def test_feedback_on_an_escalated_answer_after_a_restart_is_learned_as_escalated(
    fakes: Tiers, aiohttp_client: Any, tmp_path: Path  # noqa: F811  (the fixture imported)
) -> None:
    # The cheap fake answers tax questions empty, so the reasoning tier answers them only
    # because of that; a score of its answer, read back from the signal store after a restart,
    # must say so too, or it would pull the reasoning estimate down where the cheap tier fails.
    _, _, cheap_url, strong_url = fakes
    config = learning_config(cheap_url, strong_url, explore_share=0.0)
    client = await learning_gateway(aiohttp_client, tmp_path, config)
    headers = await ask_auto(client, TAX_SEEN[0])
    assert headers["x-gateway-escalated"] == "cheap->reasoning: empty_answer"
    path = client.app[LEARNER].path
    await client.close()

    again = await learning_gateway(aiohttp_client, tmp_path, config)
    resp = await again.post("/v1/feedback", json={"request_id": headers["x-request-id"],
                                                  "score": "bad"})
    assert resp.status == 200 and (await resp.json())["tier"] == "reasoning"
    await again.close()
    assert path is not None
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT source, tier, escalated FROM outcomes ORDER BY id").fetchall()
    assert rows == [("escalation", "cheap", 0), ("answer", "reasoning", 1),
                    ("feedback", "reasoning", 1)]


@pytest.mark.parametrize(("retention_days", "old_rated"), [(30, 404), (0, 200)])
async def test_an_answer_older_than_the_signals_retention_is_swept_and_cannot_be_rated(
    fake_openai: tuple[FakeOpenAI, str], make_gateway: GatewayFactory, retention_days: int,
    old_rated: int,
) -> None:
    """The gateway's signal store keeps ``routing.signals_retention_days``: after a restart
    (nothing in memory), an answer aged past it is swept (with 0 it is kept), a recent one is
    still rated."""
    _, url = fake_openai
    routing = {"signals_retention_days": retention_days}
    client, acme, _ = await _keyed(make_gateway, url, routing=routing)
    old = (await _ask(client, acme, "What is VAT?")).headers["x-request-id"]
    recent = (await _ask(client, acme, "What is GST?")).headers["x-request-id"]
    path = client.app[SIGNALS].path
    await client.close()  # the app's cleanup writes the signals queued
    assert path is not None
    with sqlite3.connect(path) as db:
        db.execute("UPDATE signals SET ts = ts - 31 * 86400 WHERE request_id = ?", (old,))
    again = await make_gateway(_config(url, routing=routing), env=GATEWAY_ENV)
    await again.app[SIGNALS].sweep()  # the writer's first round sweeps too: either one
    resp = await _feedback(again, acme, {"request_id": old, "score": "good"})
    assert resp.status == old_rated, await resp.text()
    resp = await _feedback(again, acme, {"request_id": recent, "score": "bad"})
    assert resp.status == 200, await resp.text()
    with sqlite3.connect(path) as db:
        kept = {r for r, in db.execute("SELECT request_id FROM signals WHERE kind = 'answer'")}
    assert kept == ({recent} if retention_days else {old, recent})
