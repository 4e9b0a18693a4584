"""Routing that learns, end to end (gateway/routing/outcomes.py, the learned policy on the chat
path, gateway/api/chat.py): the real embedder worker, real SQLite files, two tiers of fake
OpenAI-compatible providers, and ``[routing.learning]`` on.

The cheap fake answers every tax question with an empty answer, which escalation catches; the
gateway learns from those escalations to send tax questions it has never seen straight to the
reasoning tier while other prompts (capitals, translations) stay cheap, and, once the fake
improves, recency and exploration bring them back. Each class comes from templates, so that its
members are each other's nearest neighbours, as a kind of prompt is in real traffic.
Each request waits for the learner to take in what it taught (``Learner.drained``), so every
decision sees the same memory and the seeded exploration makes the same choices on every run.
The learner's clock is the test's: "an hour later" is a jump of the clock, not a wait.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from embedder_worker.supervisor import EMBEDDER_POOL
from gateway.app import create_app
from gateway.routing.context import ROUTER, SIGNALS
from gateway.routing.learned.context import LEARNER, LEARNING_CONFIG
from gateway.tenants.context import LEDGER_KEY
from tests.conftest import ROOT, Config, model, openai_provider, settings_from
from tests.fake_openai import FakeOpenAI, Reply, fake_openai_app
from tests.tenant_fixtures import GATEWAY_ENV, bearer, new_tenant_key

MODEL_DIR = ROOT / "models" / "all-MiniLM-L6-v2"
HALF_LIFE_S = 3600.0

# The class the cheap fake fails: tax questions, from two templates, so that they sit together
# in embedding space; the ones asked later are combinations never asked before. The intent
# routes send them to the cheap tier (as ambiguous factual or maths questions).
VAT = "How much VAT do I pay on a {} bought in {}?"
INCOME = "Do I owe income tax on {} earned in {}?"
TAX_SEEN = [
    *(VAT.format(item, country) for item, country in (
        ("used car", "Germany"), ("new laptop", "France"), ("sofa", "Italy"),
        ("camera", "Poland"), ("piano", "Belgium"), ("tablet", "Portugal"))),
    *(INCOME.format(income, country) for income, country in (
        ("rental income", "Germany"), ("freelance income", "France"), ("dividends", "Spain"),
        ("a pension", "Italy"), ("tips", "Poland"), ("royalties", "Belgium"))),
]
TAX_NEW = [
    VAT.format("washing machine", "Austria"), INCOME.format("lottery winnings", "Austria"),
    VAT.format("phone", "the Netherlands"), INCOME.format("a bonus", "the Netherlands"),
]
# A class the cheap fake answers well: capitals and translations, the same way.
CAPITAL = "What is the capital of {}?"
TRANSLATE = "Translate '{}' into {}."
OTHER_SEEN = [
    *(CAPITAL.format(c) for c in ("Australia", "Canada", "Japan")),
    *(TRANSLATE.format(p, lang) for p, lang in (
        ("good morning", "Italian"), ("thank you", "German"), ("see you soon", "French"))),
]
OTHER_NEW = [CAPITAL.format("Brazil"), CAPITAL.format("Kenya"),
             TRANSLATE.format("good night", "Spanish"), TRANSLATE.format("how are you", "Dutch")]


class Clock:
    """Wall-clock time that a test can move forward."""

    def __init__(self) -> None:
        self.ahead_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead_s


def _is_tax(body: dict[str, Any]) -> bool:
    text = str(body["messages"][-1]["content"]).lower()
    return "tax" in text or "vat" in text


def _config(cheap: str, strong: str, **learning: Any) -> Config:
    return {
        "providers": [openai_provider("cheap-p", cheap), openai_provider("strong-p", strong)],
        "models": [model("small", "cheap-p", "cheap", input_price_per_mtok=0.1,
                         output_price_per_mtok=0.4),
                   model("large", "strong-p", "reasoning", input_price_per_mtok=3.0,
                         output_price_per_mtok=15.0)],
        "embedder": {"model_dir": str(MODEL_DIR)},
        "routing": {"learning": {"enabled": True, "seed": 11, "explore_share": 0.1,
                                 "half_life_s": HALF_LIFE_S, **learning},
                    "outcomes": {"retry_window_s": 0}},
    }


Tiers = tuple[FakeOpenAI, FakeOpenAI, str, str]


@pytest.fixture
async def fakes(aiohttp_server: Any) -> Tiers:
    cheap, strong = FakeOpenAI(), FakeOpenAI()
    cheap.rule = lambda body: Reply(text="") if _is_tax(body) else None
    s1: TestServer = await aiohttp_server(fake_openai_app(cheap))
    s2: TestServer = await aiohttp_server(fake_openai_app(strong))
    yield cheap, strong, str(s1.make_url("/v1")), str(s2.make_url("/v1"))
    cheap.release.set()
    strong.release.set()


async def _gateway(aiohttp_client: Any, tmp_path: Path, config: Config,
                   clock: Clock | None = None) -> TestClient:
    app = create_app(settings_from(config, tmp_path))
    if clock is not None:
        app[LEARNING_CONFIG] = replace(app[LEARNING_CONFIG], clock=clock)
    client: TestClient = await aiohttp_client(app)
    await app[EMBEDDER_POOL].wait_live(1)
    await app[ROUTER].loaded.wait()
    return client


async def _ask(client: TestClient, text: str) -> dict[str, str]:
    """Ask ``model: "auto"``; the response headers, once the learner has taken it in."""
    resp = await client.post("/v1/chat/completions", json={
        "model": "auto", "messages": [{"role": "user", "content": text}]})
    assert resp.status == 200, await resp.text()
    await resp.read()
    learner = client.app.get(LEARNER)
    if learner is not None:
        await learner.drained()
    return {k.lower(): v for k, v in resp.headers.items()}


def _reason(headers: dict[str, str]) -> str:
    return headers["x-gateway-route-reason"].split(" ", 1)[0]


def _learned(headers: dict[str, str]) -> dict[str, str]:
    """The ``x-gateway-route-learned`` header's fields."""
    fields = (part.split("=", 1) for part in headers["x-gateway-route-learned"].split("; "))
    return {k: v for k, v in fields}


async def test_the_gateway_learns_which_prompts_need_the_reasoning_tier_and_unlearns_it(
    fakes: Tiers, aiohttp_client: Any, tmp_path: Path
) -> None:
    cheap, _, cheap_url, strong_url = fakes
    clock = Clock()
    client = await _gateway(aiohttp_client, tmp_path, _config(cheap_url, strong_url), clock)
    first = await _ask(client, TAX_SEEN[0])
    # Cold, the intent routes decide: cheap first, and the empty answer escalates.
    assert "x-gateway-route-learned" not in first
    assert first["x-gateway-escalated"] == "cheap->reasoning: empty_answer"
    for text in [*TAX_SEEN[1:], *OTHER_SEEN]:
        await _ask(client, text)

    # Tax questions never asked before now go straight to the reasoning tier; others stay cheap.
    straight = 0
    for text in TAX_NEW:
        asked_cheap = len(cheap.requests)
        headers = await _ask(client, text)
        if _reason(headers) == "explored":
            continue
        assert _reason(headers) == "learned", headers
        assert headers["x-gateway-tier"] == "reasoning" and "x-gateway-escalated" not in headers
        assert _learned(headers)["prior"] == "cheap"  # the intent routes said cheap
        assert float(_learned(headers)["p_cheap"]) < float(_learned(headers)["p_reasoning"])
        assert len(cheap.requests) == asked_cheap  # the cheap tier was not even asked
        straight += 1
    assert straight >= 3
    for text in OTHER_NEW:
        headers = await _ask(client, text)
        if _reason(headers) != "explored":
            assert headers["x-gateway-tier"] == "cheap", headers

    # The cheap fake improves; an hour passes many times over. Recency lets the old failures
    # fade and exploration tries the cheap tier again, so tax questions return to it.
    cheap.rule = None
    clock.ahead_s += 5 * HALF_LIFE_S
    back_to_cheap: set[str] = set()
    for i in range(40):
        text = TAX_NEW[i % len(TAX_NEW)]
        headers = await _ask(client, text)
        if _reason(headers) == "learned" and headers["x-gateway-tier"] == "cheap":
            assert "x-gateway-escalated" not in headers
            back_to_cheap.add(text)
        if back_to_cheap == set(TAX_NEW):
            break
    assert back_to_cheap == set(TAX_NEW)


async def test_with_nothing_learned_the_gateway_decides_exactly_as_the_intent_routes(
    fakes: Tiers, aiohttp_client: Any, tmp_path: Path
) -> None:
    _, _, cheap_url, strong_url = fakes
    learning = await _gateway(aiohttp_client, tmp_path / "learning",
                              _config(cheap_url, strong_url))
    intent = await _gateway(aiohttp_client, tmp_path / "intent",
                            _config(cheap_url, strong_url, enabled=False))
    assert LEARNER in learning.app and LEARNER not in intent.app
    for text in [*TAX_SEEN, *OTHER_SEEN, "Write a Python function that merges two lists."]:
        body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
        answers = [await c.post("/v1/route", json=body) for c in (learning, intent)]
        decided = [await a.json() for a in answers]
        assert decided[0] == decided[1] and decided[0]["learned"] is None
        headers = [{k: v for k, v in a.headers.items() if k.startswith("x-gateway-route")}
                   for a in answers]
        assert headers[0] == headers[1]
    chats = [await _ask(c, OTHER_SEEN[0]) for c in (learning, intent)]
    assert chats[0]["x-gateway-route-reason"] == chats[1]["x-gateway-route-reason"]
    assert chats[0]["x-gateway-tier"] == chats[1]["x-gateway-tier"]


async def _dry_run(client: TestClient, text: str) -> dict[str, Any]:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    decided: dict[str, Any] = await (await client.post("/v1/route", json=body)).json()
    return decided


async def test_what_was_learned_survives_a_restart(
    fakes: Tiers, aiohttp_client: Any, tmp_path: Path
) -> None:
    _, _, cheap_url, strong_url = fakes
    config = _config(cheap_url, strong_url, explore_share=0.0)
    client = await _gateway(aiohttp_client, tmp_path, config)
    for text in [*TAX_SEEN, *OTHER_SEEN]:
        await _ask(client, text)
    remembered = client.app[LEARNER].stats().remembered
    before = [await _dry_run(client, text) for text in [*TAX_NEW, *OTHER_NEW]]
    assert before[0]["reason"] == "learned" and before[0]["tier"] == "reasoning"
    await client.close()  # the learner writes what it holds on the way out

    again = await _gateway(aiohttp_client, tmp_path, config)
    assert again.app[LEARNER].stats().remembered == remembered > 0
    after = [await _dry_run(again, text) for text in [*TAX_NEW, *OTHER_NEW]]
    for old, new in zip(before, after, strict=True):
        assert (new["tier"], new["reason"]) == (old["tier"], old["reason"])
        assert new["learned"]["outcomes"] == old["learned"]["outcomes"]
        for tier, estimate in old["learned"]["estimates"].items():
            assert new["learned"]["estimates"][tier]["p"] == pytest.approx(estimate["p"],
                                                                           abs=1e-3)
    headers = await _ask(again, TAX_NEW[0])
    assert headers["x-gateway-tier"] == "reasoning" and "x-gateway-escalated" not in headers


def _p(decided: dict[str, Any], tier: str = "cheap") -> float:
    return float(decided["learned"]["estimates"][tier]["p"])


async def test_a_quick_retry_and_bad_feedback_count_against_the_answer_they_refer_to(
    fakes: Tiers, aiohttp_client: Any, tmp_path: Path
) -> None:
    cheap, _, cheap_url, strong_url = fakes
    cheap.rule = None  # every answer passes its checks: only the client can say otherwise
    config = _config(cheap_url, strong_url, explore_share=0.0)
    config["routing"]["outcomes"] = {"retry_window_s": 600}
    client = await _gateway(aiohttp_client, tmp_path, config)
    question = TAX_SEEN[0]
    first = await _ask(client, question)
    assert first["x-gateway-tier"] == "cheap"
    answered = _p(await _dry_run(client, question))
    again = await _ask(client, question.replace("?", "??"))  # asked again at once
    retried = _p(await _dry_run(client, question))
    assert retried < answered

    store = client.app[SIGNALS]
    await store.flush()
    with sqlite3.connect(store.path) as db:
        rows = db.execute("SELECT request_id, tier, detail FROM signals "
                          "WHERE kind = 'client_retry'").fetchall()
    assert [(r, t) for r, t, _ in rows] == [(first["x-request-id"], "cheap")]
    assert again["x-request-id"] in rows[0][2]

    other = OTHER_SEEN[0]
    answer = await _ask(client, other)
    learner = client.app[LEARNER]
    remembered = learner.stats().remembered
    refused = await client.post("/v1/feedback", json={"request_id": answer["x-request-id"],
                                                      "score": "awful"})
    assert refused.status == 400
    await learner.drained()
    assert learner.stats().remembered == remembered  # bad input teaches nothing
    served = answer["x-gateway-tier"]
    liked = _p(await _dry_run(client, other), served)
    resp = await client.post("/v1/feedback", json={"request_id": answer["x-request-id"],
                                                   "score": "bad"})
    assert resp.status == 200 and (await resp.json())["tier"] == served
    await learner.drained()
    assert learner.stats().remembered == remembered + 1
    assert _p(await _dry_run(client, other), served) < liked


async def test_a_tenant_past_its_budgets_soft_share_is_never_explored(
    fakes: Tiers, aiohttp_client: Any, tmp_path: Path
) -> None:
    _, _, cheap_url, strong_url = fakes
    config = _config(cheap_url, strong_url, explore_share=0.9)
    config["tenants"] = {"bootstrap": False, "tokenizer": "", "budget_soft_share": 1e-9,
                         "ledger": {"flush_interval_s": 0.01}}
    app = create_app(settings_from(config, tmp_path, GATEWAY_ENV))
    client: TestClient = await aiohttp_client(app)
    await app[EMBEDDER_POOL].wait_live(1)
    await app[ROUTER].loaded.wait()
    thrifty = await new_tenant_key(client, "thrifty", limits={"daily_budget_usd": 1000.0})
    free = await new_tenant_key(client, "free")
    ledger = app[LEDGER_KEY]
    reasons: dict[str, list[str]] = {"thrifty": [], "free": []}
    for i, text in enumerate([*OTHER_SEEN, *OTHER_NEW]):
        for tenant, key in (("thrifty", thrifty), ("free", free)):
            resp = await client.post("/v1/chat/completions", headers=bearer(key), json={
                "model": "auto", "messages": [{"role": "user", "content": text}]})
            assert resp.status == 200, await resp.text()
            reasons[tenant].append(resp.headers["x-gateway-route-reason"].split(" ", 1)[0])
            await app[LEARNER].drained()
        await ledger.wait_written(2 * (i + 1))  # the spend is settled before the next ask
    # The first ask spends; from then on thrifty is past the soft share of its budget.
    assert "explored" not in reasons["thrifty"][1:]
    assert "explored" in reasons["free"]


async def test_a_tier_answering_because_the_chosen_one_was_down_is_not_scored_as_chosen(
    fakes: Tiers, aiohttp_client: Any, tmp_path: Path
) -> None:
    # The learned policy chose the cheap tier by its estimate; every cheap deployment failed,
    # so the reasoning tier answered. That answer's outcome carries no decided estimate (the
    # reasoning tier was not chosen by one, Outcome.decided); the cheap tier's failure does.
    cheap, _, cheap_url, strong_url = fakes
    client = await _gateway(aiohttp_client, tmp_path,
                            _config(cheap_url, strong_url, explore_share=0.0))
    for text in OTHER_SEEN:
        await _ask(client, text)
    cheap.rule = lambda body: Reply(kind="status", status=503)
    headers = await _ask(client, OTHER_NEW[0])
    assert _reason(headers) == "learned" and _learned(headers)["prior"] == "cheap"
    assert headers["x-gateway-tier"] == "reasoning", headers
    learning_file = client.app[LEARNER].path
    await client.close()  # the learner writes what it holds on the way out
    assert learning_file is not None
    with sqlite3.connect(learning_file) as db:
        last = db.execute("SELECT tier, source, decided FROM outcomes ORDER BY id DESC LIMIT 2"
                          ).fetchall()
    (answer_tier, answer_source, answer_decided), (failed_tier, _, failed_decided) = last
    assert (answer_tier, answer_source, answer_decided) == ("reasoning", "answer", None)
    assert failed_tier == "cheap" and failed_decided is not None
