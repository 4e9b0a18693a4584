"""gateway/cache/controls.py: Cache-Control directives, the per-request plan, response headers."""

from __future__ import annotations

import pytest

from gateway.cache.controls import CacheDirectives, cache_headers, decide, parse_cache_control
from gateway.cache.semantic_cache import Hit


@pytest.mark.parametrize(("header", "expected"), [
    (None, CacheDirectives()),
    ("", CacheDirectives()),
    ("no-cache", CacheDirectives(no_cache=True)),
    ("No-Store", CacheDirectives(no_store=True)),
    ("no-cache, no-store", CacheDirectives(no_cache=True, no_store=True)),
    ("max-age=0", CacheDirectives(no_cache=True)),
    ('max-age="0", private', CacheDirectives(no_cache=True)),
    ("max-age=60, foo=bar", CacheDirectives()),
])
def test_cache_control_directives(header: str | None, expected: CacheDirectives) -> None:
    assert parse_cache_control(header) == expected


def test_plan_follows_policy_and_directives() -> None:
    assert decide("off", CacheDirectives()).bypass
    assert not decide("off", CacheDirectives()).store
    plan = decide("semantic", CacheDirectives(no_cache=True))
    assert (plan.lookup, plan.store) == (False, True)
    plan = decide("exact", CacheDirectives(no_store=True))
    assert (plan.policy, plan.lookup, plan.store) == ("exact", True, False)
    assert decide("semantic", CacheDirectives(), available=False).policy == "off"


def test_headers_for_hit_miss_and_bypass() -> None:
    hit = Hit(42, "semantic", 0.97123, {}, "q", 0.0)
    assert cache_headers(hit, entry="ce_0123456789abcdef") == {
        "x-gateway-cache": "hit", "x-gateway-cache-kind": "semantic",
        "x-gateway-cache-score": "0.9712", "x-gateway-cache-entry": "ce_0123456789abcdef",
    }
    assert cache_headers(None) == {"x-gateway-cache": "miss"}
    assert cache_headers(None, bypassed=True) == {"x-gateway-cache": "bypass"}
