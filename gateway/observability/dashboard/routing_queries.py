"""Read-only queries behind the dashboard's routing page: tiers, escalations, feedback, overrides.

Two databases answer them. The ledger (``usage`` in the tenants database) says, for requests
routed by an alias (``model: "auto"``), which tier answered and whether escalation was needed.
The signal store (``signals.sqlite3``) says what the learned policy decided (decisions whose
detail holds ``learned``: the tier the intent routes chose and the estimates), what tenants
said (``feedback``) and which answers they asked for again (``client_retry``). Times are
bucketed as the overview's charts are (``width_s`` buckets from ``since``). Each function takes
an open connection and reads only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import aiosqlite

from gateway.observability.dashboard.queries import BUCKET_OF, flag
from gateway.tenants.backend import TenantStore

_BUCKET = "CAST((ts - :since) / :width AS INTEGER)"
_HIT = "cache = 'hit'"
_PRIOR = "json_extract(detail, '$.learned.prior_tier')"


@dataclass(frozen=True, slots=True)
class TierBucket:
    """Routed requests answered in one bucket: per tier (cache hits apart), escalated ones."""

    start: float
    tiers: dict[str, int] = field(default_factory=dict)
    answered: int = 0
    escalated: int = 0
    cache_hits: int = 0

    def share(self, tier: str) -> float | None:
        """``tier``'s share of the answers a tier gave (cache hits left out)."""
        served = sum(self.tiers.values())
        return self.tiers.get(tier, 0) / served if served else None

    @property
    def escalation_rate(self) -> float | None:
        return self.escalated / self.answered if self.answered else None


@dataclass(frozen=True, slots=True)
class SignalBucket:
    """What the signal store holds for one bucket."""

    start: float
    good: int = 0
    bad: int = 0
    retries: int = 0
    learned: int = 0
    overridden: int = 0
    decisions: int = 0


@dataclass(frozen=True, slots=True)
class Override:
    """Decisions where the learned policy chose another tier than the intent routes."""

    route: str
    prior_tier: str
    tier: str
    decisions: int
    explored: int
    last_ts: float


async def tier_buckets(store: TenantStore, aliases: Sequence[str], since: float, until: float,
                       width_s: int) -> list[TierBucket]:
    """Every ``width_s`` bucket of routed, successful requests in ``[since, until)``; in the SQL
    SQLite and PostgreSQL share (``queries``), so the page works on either ledger."""
    marks = ", ".join(f":a{i}" for i in range(len(aliases))) or "NULL"
    params: dict[str, object] = {"since": since, "until": until, "width": width_s}
    params.update({f"a{i}": a for i, a in enumerate(aliases)})
    rows = await store.fetch(
        f"SELECT {BUCKET_OF.format(t='ts')} AS g, "
        "CASE WHEN cache = 'hit' THEN NULL ELSE tier END AS t, count(*), "
        f"sum({flag('escalations > 0')}), sum({flag(_HIT)}) FROM usage "
        f"WHERE ts >= :since AND ts < :until AND status < 400 AND model IN ({marks}) "
        "GROUP BY g, t", params)
    grouped: dict[int, list[tuple[str | None, int, int, int]]] = {}
    for b, tier, count, escalated, hits in rows:
        grouped.setdefault(int(b), []).append((tier, int(count), int(escalated or 0),
                                               int(hits or 0)))
    out = []
    for i, start in enumerate(bucket_starts(since, until, width_s)):
        parts = grouped.get(i, [])
        out.append(TierBucket(
            start, {t: c for t, c, _, _ in parts if t is not None},
            sum(c for _, c, _, _ in parts), sum(e for _, _, e, _ in parts),
            sum(h for _, _, _, h in parts)))
    return out


async def signal_buckets(db: aiosqlite.Connection, since: float, until: float,
                         width_s: int) -> list[SignalBucket]:
    """Feedback (good: a score of 0.5 or more), client retries and learned decisions (and
    how many overrode the intent routes) per bucket."""
    score = "json_extract(detail, '$.score')"
    rows = await db.execute_fetchall(
        f"SELECT {_BUCKET}, sum(kind = 'feedback' AND {score} >= 0.5), "
        f"sum(kind = 'feedback' AND {score} < 0.5), sum(kind = 'client_retry'), "
        f"sum(kind = 'decision' AND {_PRIOR} IS NOT NULL), "
        f"sum(kind = 'decision' AND {_PRIOR} IS NOT NULL AND {_PRIOR} != tier), "
        "sum(kind = 'decision') FROM signals "
        "WHERE kind IN ('feedback', 'client_retry', 'decision') "
        "AND ts >= :since AND ts < :until GROUP BY 1",
        {"since": since, "until": until, "width": width_s})
    found = {int(r[0]): [int(v or 0) for v in r[1:]] for r in rows}
    return [SignalBucket(start, *found.get(i, [0] * 6))
            for i, start in enumerate(bucket_starts(since, until, width_s))]


async def overrides(db: aiosqlite.Connection, since: float, until: float,
                    limit: int = 20) -> list[Override]:
    """Where the learned policy overrode the intent routes, most frequent first."""
    rows = await db.execute_fetchall(
        f"SELECT coalesce(route, 'none'), {_PRIOR}, tier, count(*), "
        "coalesce(sum(json_extract(detail, '$.learned.explored')), 0), max(ts) FROM signals "
        f"WHERE kind = 'decision' AND ts >= :since AND ts < :until AND {_PRIOR} IS NOT NULL "
        f"AND {_PRIOR} != tier GROUP BY 1, 2, 3 ORDER BY 4 DESC, 6 DESC LIMIT :limit",
        {"since": since, "until": until, "limit": limit})
    return [Override(str(r), str(p), str(t), int(n), int(e), float(ts))
            for r, p, t, n, e, ts in rows]


async def escalation_reasons(db: aiosqlite.Connection, since: float,
                             until: float) -> list[tuple[str, str, int]]:
    """(tier, reason, count) of the escalations in the window, most frequent first."""
    rows = await db.execute_fetchall(
        "SELECT coalesce(tier, 'none'), coalesce(json_extract(detail, '$.kind'), 'unknown'), "
        "count(*) FROM signals WHERE kind = 'escalation' AND ts >= :since AND ts < :until "
        "GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 20", {"since": since, "until": until})
    return [(str(t), str(k), int(n)) for t, k, n in rows]


def bucket_starts(since: float, until: float, width_s: int) -> list[float]:
    """The start of every ``width_s`` bucket from ``since`` up to ``until``."""
    return [since + i * width_s for i in range(max(0, int((until - since + width_s - 1)
                                                          // width_s)))]
