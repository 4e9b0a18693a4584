"""What a request may ask of the cache, and what the response says about it.

``parse_cache_control`` reads the request's ``Cache-Control`` header: ``no-cache`` (or
``max-age=0``) skips the lookup, ``no-store`` keeps the answer out of the cache; both may be given.
``decide`` combines those with the tenant's and the route's policy into one ``CachePlan``.
``cache_headers`` writes ``x-gateway-cache: hit|miss|bypass``, and for a hit
``x-gateway-cache-kind: exact|semantic`` and ``x-gateway-cache-score``. Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.cache.semantic_cache import Hit
from gateway.core.cache_settings import Policy

HEADER = "x-gateway-cache"
KIND_HEADER = "x-gateway-cache-kind"
SCORE_HEADER = "x-gateway-cache-score"
ENTRY_HEADER = "x-gateway-cache-entry"


@dataclass(frozen=True, slots=True)
class CacheDirectives:
    no_cache: bool = False
    no_store: bool = False


@dataclass(frozen=True, slots=True)
class CachePlan:
    """For one request: whether to look up, whether to store, and at which policy."""

    policy: Policy
    lookup: bool
    store: bool

    @property
    def bypass(self) -> bool:
        return not self.lookup


def parse_cache_control(value: str | None) -> CacheDirectives:
    """The directives of a ``Cache-Control`` header; unknown directives are ignored."""
    if not value:
        return CacheDirectives()
    names = set()
    for part in value.split(","):
        name, _, argument = part.strip().partition("=")
        name = name.strip().lower()
        if name == "max-age" and argument.strip().strip('"') == "0":
            name = "no-cache"
        names.add(name)
    return CacheDirectives(no_cache="no-cache" in names, no_store="no-store" in names)


def decide(policy: Policy, directives: CacheDirectives, *, available: bool = True) -> CachePlan:
    """The plan for a request: ``available`` False when the cache is disabled or not open."""
    if policy == "off" or not available:
        return CachePlan("off", lookup=False, store=False)
    return CachePlan(policy, lookup=not directives.no_cache, store=not directives.no_store)


def cache_headers(hit: Hit | None, *, bypassed: bool = False) -> dict[str, str]:
    """Response headers for a hit, a miss, or a bypassed cache (off, no-cache, no vector)."""
    if hit is not None:
        return {
            HEADER: "hit",
            KIND_HEADER: hit.kind,
            SCORE_HEADER: f"{hit.score:.4f}",
            ENTRY_HEADER: str(hit.entry_id),
        }
    return {HEADER: "bypass" if bypassed else "miss"}
