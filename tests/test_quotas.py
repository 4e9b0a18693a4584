"""Tests for gateway/tenants/quotas.py (admission, counters, budgets) and tokens.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.core.answer import Usage
from gateway.core.errors import BudgetExceeded, RateLimited
from gateway.core.tenant_settings import Limits
from gateway.tenants.auth import Principal
from gateway.tenants.counters import CounterStore, MemoryCounterStore, Take
from gateway.tenants.quotas import (
    Admission,
    Reservation,
    format_reset,
    rate_limit_headers,
)
from gateway.tenants.tokens import MAX_EXACT_CHARS, TokenCounter
from tests.services import missing
from tests.tenant_fixtures import chat, principal

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "models" / "all-MiniLM-L6-v2" / "tokenizer.json"
NOON = datetime(2025, 6, 15, 12, 0, tzinfo=UTC).timestamp()


class Clock:
    """A clock that moves only when the test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def admission(**options: object) -> tuple[Admission, Clock, Clock]:
    clock, wall = Clock(1000.0), Clock(NOON)
    counters: CounterStore = MemoryCounterStore()
    made = Admission(counters, TokenCounter(None), clock=clock, wall_clock=wall,
                     **options)  # type: ignore[arg-type]
    return made, clock, wall


async def _admit_all(adm: Admission, who: Principal, count: int) -> tuple[
    list[Reservation], list[RateLimited]
]:
    results = await asyncio.gather(*(adm.admit(who, chat()) for _ in range(count)),
                                   return_exceptions=True)
    admitted = [r for r in results if isinstance(r, Reservation)]
    refused = [r for r in results if isinstance(r, RateLimited)]
    assert len(admitted) + len(refused) == count
    return admitted, refused


async def test_200_concurrent_admissions_against_50_per_minute_admit_exactly_50() -> None:
    adm, _, _ = admission()
    who = principal(tenant_limits=Limits(requests_per_minute=50))
    admitted, refused = await _admit_all(adm, who, 200)
    assert len(admitted) == 50
    assert len(refused) == 150
    assert all(e.status == 429 and e.headers["Retry-After"] == "2" for e in refused)
    assert refused[0].headers["x-ratelimit-remaining-requests"] == "0"
    assert adm.in_flight == 50


async def test_requests_come_back_as_the_bucket_refills() -> None:
    adm, clock, _ = admission()
    who = principal(tenant_limits=Limits(requests_per_minute=60))
    assert len((await _admit_all(adm, who, 100))[0]) == 60
    clock.now += 30
    assert len((await _admit_all(adm, who, 100))[0]) == 30
    clock.now += 3600
    assert len((await _admit_all(adm, who, 100))[0]) == 60


async def test_token_reservations_under_concurrency_overshoot_only_by_underestimates() -> None:
    adm, _, _ = admission()
    limit = 20_000
    who = principal(tenant_limits=Limits(tokens_per_minute=limit))
    in_flight: dict[int, int] = {}
    settled: list[tuple[int, int]] = []  # (reserved, actual)

    def check() -> None:
        used = sum(in_flight.values()) + sum(actual for _, actual in settled)
        underestimates = sum(max(0, actual - reserved) for reserved, actual in settled)
        assert used <= limit + underestimates

    async def one(i: int) -> bool:
        try:
            res = await adm.admit(who, chat("word " * (i % 40 + 1), max_tokens=150))
        except RateLimited:
            return False
        in_flight[res.id] = res.reserved_tokens
        check()
        for _ in range(i % 7):
            await asyncio.sleep(0)  # interleave with the other tasks
        actual = res.reserved_tokens * (50 + (i % 3) * 50) // 100  # 50%, 100%, 150%
        await adm.settle(res, Usage(actual, 0), 0.0)
        settled.append((in_flight.pop(res.id), actual))
        check()
        return True

    results = await asyncio.gather(*(one(i) for i in range(400)))
    assert 0 < sum(results) < 400
    assert adm.in_flight == 0


async def test_tokens_are_trued_up_at_settle_and_given_back_on_release() -> None:
    adm, _, _ = admission()
    who = principal(tenant_limits=Limits(tokens_per_minute=1000))
    first = await adm.admit(who, chat("hi", max_tokens=400))
    assert first.tokens is not None
    assert first.tokens.remaining == 1000 - first.reserved_tokens
    await adm.settle(first, Usage(10, 20), 0.0)
    await adm.settle(first, Usage(900, 0), 0.0)  # a second settle changes nothing
    second = await adm.admit(who, chat("hi", max_tokens=400))
    assert second.tokens is not None
    assert second.tokens.remaining == 1000 - 30 - second.reserved_tokens
    await adm.release(second)
    third = await adm.admit(who, chat("hi", max_tokens=1))
    assert third.tokens is not None
    assert third.tokens.remaining == 1000 - 30 - third.reserved_tokens


async def test_a_request_larger_than_the_token_limit_waits_for_a_full_bucket() -> None:
    adm, clock, _ = admission()
    who = principal(tenant_limits=Limits(tokens_per_minute=100))
    big = await adm.admit(who, chat(max_tokens=5000))
    assert big.token_takes[0].amount == 100
    with pytest.raises(RateLimited) as caught:
        await adm.admit(who, chat(max_tokens=5000))
    assert caught.value.retry_after_s == pytest.approx(60.0)
    await adm.settle(big, Usage(40, 0), 0.0)
    clock.now += 24  # 40 tokens refilled: a full bucket again
    await adm.admit(who, chat(max_tokens=5000))


async def test_concurrency_is_limited_per_tenant_and_per_key() -> None:
    adm, _, _ = admission()
    who = principal(tenant_limits=Limits(max_concurrent=3), key_limits=Limits(max_concurrent=2))
    held = [await adm.admit(who, chat()), await adm.admit(who, chat())]
    with pytest.raises(RateLimited, match="concurrent requests for key"):
        await adm.admit(who, chat())
    other_key = principal(key_id="key_2", tenant_limits=Limits(max_concurrent=3))
    await adm.admit(other_key, chat())
    with pytest.raises(RateLimited, match="concurrent requests for tenant"):
        await adm.admit(other_key, chat())
    await adm.release(held[0])
    await adm.admit(other_key, chat())


async def test_a_refused_rate_limit_gives_its_concurrency_slot_back() -> None:
    adm, _, _ = admission()
    who = principal(tenant_limits=Limits(max_concurrent=1, requests_per_minute=1))
    held = await adm.admit(who, chat())
    await adm.release(held)
    with pytest.raises(RateLimited, match="requests per minute"):
        await adm.admit(who, chat())
    counters = adm.counters
    assert await counters.acquire_slots([("t:acme:conc", 1)]) is None


async def test_past_the_soft_share_auto_requests_are_downgraded() -> None:
    adm, _, _ = admission()
    who = principal(tenant_limits=Limits(daily_budget_usd=1.0))
    first = await adm.admit(who, chat())
    assert not first.downgrade and first.budget_share == 0
    await adm.settle(first, Usage(1, 1), 0.95)
    auto = await adm.admit(who, chat(model="auto"))
    explicit = await adm.admit(who, chat(model="big-model"))
    assert auto.downgrade and auto.budget_share == pytest.approx(0.95)
    assert not explicit.downgrade


async def test_past_the_soft_share_the_refuse_policy_refuses() -> None:
    adm, _, _ = admission(soft_action="refuse", soft_share=0.5)
    who = principal(key_limits=Limits(monthly_budget_usd=10.0))
    await adm.settle(await adm.admit(who, chat()), None, 5.0)
    with pytest.raises(BudgetExceeded, match="key 'key_1' \\(monthly\\)"):
        await adm.admit(who, chat())


async def test_a_spent_budget_refuses_until_the_day_turns() -> None:
    adm, _, wall = admission()
    who = principal(tenant_limits=Limits(daily_budget_usd=1.0, monthly_budget_usd=1.5))
    await adm.settle(await adm.admit(who, chat()), Usage(1, 1), 1.0)
    with pytest.raises(BudgetExceeded) as caught:
        await adm.admit(who, chat())
    assert caught.value.status == 429
    assert caught.value.code == "insufficient_quota"
    assert caught.value.headers["Retry-After"] == str(12 * 3600)
    wall.now += 13 * 3600  # the next UTC day: the daily budget is fresh, the month is not
    res = await adm.admit(who, chat())
    await adm.settle(res, None, 0.6)
    with pytest.raises(BudgetExceeded, match="monthly"):
        await adm.admit(who, chat())


async def test_another_tenants_spend_does_not_count() -> None:
    adm, _, _ = admission()
    limits = Limits(daily_budget_usd=1.0)
    spender = principal("acme", "key_1", tenant_limits=limits)
    await adm.settle(await adm.admit(spender, chat()), None, 5.0)
    await adm.admit(principal("beta", "key_2", tenant_limits=limits), chat())


async def test_spend_from_another_day_is_not_counted_today() -> None:
    adm, _, _ = admission()
    who = principal(tenant_limits=Limits(daily_budget_usd=1.0, monthly_budget_usd=10.0))
    await adm.add_spend("acme", "key_1", 5.0, NOON - 86_400)
    res = await adm.admit(who, chat())
    assert res.budget_share == pytest.approx(0.5)
    await adm.add_spend("acme", "key_1", 50.0, NOON - 40 * 86_400)  # last month: ignored
    await adm.admit(who, chat())


async def test_rate_limit_headers_describe_the_tightest_limit() -> None:
    adm, _, _ = admission()
    who = principal(tenant_limits=Limits(requests_per_minute=50, tokens_per_minute=10_000),
                    key_limits=Limits(requests_per_minute=10))
    res = await adm.admit(who, chat("hello", max_tokens=100))
    headers = rate_limit_headers(res)
    assert headers["x-ratelimit-limit-requests"] == "10"
    assert headers["x-ratelimit-remaining-requests"] == "9"
    assert headers["x-ratelimit-reset-requests"] == "6s"
    assert headers["x-ratelimit-limit-tokens"] == "10000"
    assert headers["x-ratelimit-remaining-tokens"] == str(10_000 - res.reserved_tokens)
    assert headers["x-ratelimit-reset-tokens"].endswith("ms")
    assert await adm.headers(who) == headers  # looking takes nothing


async def test_an_unlimited_principal_gets_no_headers_and_no_token_count() -> None:
    adm, _, _ = admission()
    res = await adm.admit(principal(), chat("x" * 1000))
    assert rate_limit_headers(res) == {}
    assert (res.prompt_tokens, res.reserved_tokens, res.slots) == (0, 0, ())


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.02, "20ms"), (1.0, "1s"), (1.5, "1.5s"), (59.0, "59s"), (360.0, "6m0s"), (61.4, "1m1s")],
)
def test_reset_durations_are_written_as_openai_does(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


async def test_memory_counters_take_all_or_nothing() -> None:
    counters = MemoryCounterStore()
    takes = [Take("a", 5, 10), Take("b", 5, 4)]
    result = await counters.take(takes, 0.0)
    assert not result.granted and result.failed == 1
    assert result.retry_after_s == pytest.approx(15.0)
    again = await counters.take([Take("a", 10, 10)], 0.0)
    assert again.granted and again.states[0].remaining == 0


async def test_new_limits_for_the_same_key_apply_at_once() -> None:
    adm, _, _ = admission()
    await adm.admit(principal(key_limits=Limits(requests_per_minute=5)), chat())
    reloaded = principal(key_limits=Limits(requests_per_minute=2))  # as after a reload
    headers = rate_limit_headers(await adm.admit(reloaded, chat()))
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "1"


async def test_the_first_limit_checked_names_the_refusal() -> None:
    adm, _, _ = admission()
    who = principal(tenant_limits=Limits(tokens_per_minute=50),
                    key_limits=Limits(requests_per_minute=1))
    await adm.admit(who, chat("hi", max_tokens=10))
    with pytest.raises(RateLimited) as refused:  # the key's requests are out too
        await adm.admit(who, chat("hi", max_tokens=45))
    assert "for tenant 'acme' on tokens per minute: limit 50" in refused.value.message


async def test_settled_cost_counts_for_the_tenant_and_the_key_by_day_and_month() -> None:
    adm, _, _ = admission()
    await adm.settle(await adm.admit(principal(), chat()), Usage(10, 20), 0.25)
    spent = await adm.counters.get_spend("acme", [
        ("t:acme:day", "2025-06-15"), ("k:key_1:day", "2025-06-15"),
        ("t:acme:month", "2025-06"), ("k:key_1:month", "2025-06"),
    ])
    assert spent == (0.25, 0.25, 0.25, 0.25)


async def test_a_lowered_limit_caps_a_full_bucket_at_once() -> None:
    counters = MemoryCounterStore()
    await counters.take([Take("a", 0, 10)], 5.0)
    result = await counters.take([Take("a", 0, 4)], 5.0)
    assert result.states[0].remaining == 4


async def test_memory_spend_counts_per_period() -> None:
    counters = MemoryCounterStore()
    await counters.add_spend("a", [("t:a:day", "2025-06-15")], 1.5)
    await counters.add_spend("a", [("t:a:day", "2025-06-15")], 1.0)
    assert await counters.get_spend("a", [("t:a:day", "2025-06-15")]) == (2.5,)
    assert await counters.get_spend("a", [("t:a:day", "2025-06-16")]) == (0.0,)
    await counters.add_spend("a", [("t:a:day", "2025-06-16")], 1.0)
    assert await counters.get_spend("a", [("t:a:day", "2025-06-16")]) == (1.0,)


# Token estimates --------------------------------------------------------------------------


def test_without_a_tokenizer_four_characters_make_a_token(tmp_path: Path) -> None:
    counter = TokenCounter.load(tmp_path / "missing.json")
    assert not counter.exact
    assert counter.count("x" * 40) == 10
    assert counter.count("") == 0


def test_without_a_tokenizer_non_ascii_text_counts_more_per_character() -> None:
    counter = TokenCounter(None)
    assert counter.count("é" * 40) == 10 + 20  # one extra UTF-8 byte each: half a token
    assert counter.count("語" * 40) == 10 + 40  # two extra bytes each: a whole token


def test_the_real_tokenizer_counts_words_and_extrapolates_very_long_text() -> None:
    if not TOKENIZER.is_file():
        missing("the embedding model's tokenizer is absent (make install builds it)")
    counter = TokenCounter.load(TOKENIZER)
    assert counter.exact
    assert counter.count("hello world") == 2
    long = "hello world " * (MAX_EXACT_CHARS // 6)
    assert counter.count(long) == pytest.approx(len(long) / 6, rel=0.05)


def test_the_prompt_estimate_covers_messages_and_tools() -> None:
    counter = TokenCounter(None)
    plain = counter.prompt_tokens(chat("x" * 400))
    assert plain == 3 + 4 + 100
    assert counter.prompt_tokens(chat("x" * 800)) == plain + 100
