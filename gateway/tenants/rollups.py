"""The ledger's hourly roll-ups: their tables, the latency histogram's buckets, and the SQL that
folds freshly written rows into them.

A dashboard window of a day or a week would otherwise read every raw row (a million at ~6,000
requests an hour); the roll-ups hold, per UTC hour, counts and sums by requested model,
answering model, deployment, route and API (``usage_hourly``; not by tenant, which would
multiply its rows by the tenants: per tenant figures come from ``usage_daily``), latency
histograms (``latency_hourly``: log-spaced buckets ``LATENCY_RATIO`` wide, so a percentile read
from them is within half a bucket, about 2.5 %, of the exact one) and refusal counts
(``refusals_hourly``). A missing text value is stored as ``''`` so that it can be part of a
primary key.

The ledger runs ``FOLD_USAGE`` and ``FOLD_REFUSALS`` in the transaction that inserts the rows,
so a roll-up never disagrees with its rows after a crash. ``register_functions`` gives a
connection the one SQL function the histograms need (``latency_bucket``); the store and the
dashboard's reader call it.
``window_rows`` reads a window back: whole hours from a roll-up, the partial hours at its ends
from the raw rows. Touches nothing itself: it only holds schema text, SQL and arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import aiosqlite

HOUR_S = 3600
LATENCY_RATIO = 1.05
_LOG_RATIO = math.log(LATENCY_RATIO)
_LATENCY_FLOOR_MS = 0.01
CHAT_API = "/v1/chat/completions"
EMBEDDINGS_API = "/v1/embeddings"

SCHEMA: tuple[str, ...] = (
    f"ALTER TABLE usage ADD COLUMN api TEXT NOT NULL DEFAULT '{CHAT_API}'",
    "ALTER TABLE usage ADD COLUMN answered_model TEXT",
    """CREATE TABLE usage_hourly (
        hour INTEGER NOT NULL, model TEXT NOT NULL,
        answered_model TEXT NOT NULL, deployment TEXT NOT NULL, route TEXT NOT NULL,
        api TEXT NOT NULL, requests INTEGER NOT NULL, errors INTEGER NOT NULL,
        cache_hits INTEGER NOT NULL, cache_misses INTEGER NOT NULL,
        cache_bypasses INTEGER NOT NULL, escalated INTEGER NOT NULL, tokens_in INTEGER NOT NULL,
        tokens_out INTEGER NOT NULL, cost REAL NOT NULL, saved_cost REAL NOT NULL,
        latency_ms_sum REAL NOT NULL,
        PRIMARY KEY (hour, model, answered_model, deployment, route, api)
    ) WITHOUT ROWID""",
    """CREATE TABLE latency_hourly (
        hour INTEGER NOT NULL, metric TEXT NOT NULL, bucket INTEGER NOT NULL,
        count INTEGER NOT NULL, PRIMARY KEY (hour, metric, bucket)) WITHOUT ROWID""",
    """CREATE TABLE failed_attempts (
        id INTEGER PRIMARY KEY, ts REAL NOT NULL, request_id TEXT NOT NULL,
        deployment TEXT NOT NULL)""",
    "CREATE INDEX failed_attempts_ts ON failed_attempts(ts)",
    """CREATE TABLE refusals (
        id INTEGER PRIMARY KEY, ts REAL NOT NULL, request_id TEXT NOT NULL, tenant TEXT,
        key_id TEXT, api TEXT NOT NULL, method TEXT NOT NULL, status INTEGER NOT NULL,
        code TEXT NOT NULL, param TEXT, count INTEGER NOT NULL DEFAULT 1)""",
    "CREATE INDEX refusals_ts ON refusals(ts)",
    "CREATE INDEX refusals_tenant_ts ON refusals(tenant, ts)",
    """CREATE TABLE refusals_hourly (
        hour INTEGER NOT NULL, tenant TEXT NOT NULL, api TEXT NOT NULL, status INTEGER NOT NULL,
        code TEXT NOT NULL, count INTEGER NOT NULL,
        PRIMARY KEY (hour, tenant, api, status, code)) WITHOUT ROWID""",
)

_HOUR = f"CAST(ts / {HOUR_S} AS INTEGER) * {HOUR_S}"
_USAGE_KEY = "hour, model, answered_model, deployment, route, api"
_USAGE_SUMS = ("requests", "errors", "cache_hits", "cache_misses", "cache_bypasses", "escalated",
               "tokens_in", "tokens_out", "cost", "saved_cost", "latency_ms_sum")
_FOLD_USAGE = f"""
INSERT INTO usage_hourly ({_USAGE_KEY}, {', '.join(_USAGE_SUMS)})
SELECT {_HOUR}, model, coalesce(answered_model, ''), coalesce(deployment, ''),
       coalesce(route, ''), api, count(*), sum(status >= 400), sum(cache IS 'hit'),
       sum(cache IS 'miss'), sum(cache IS 'bypass'), sum(escalations > 0), sum(tokens_in),
       sum(tokens_out), sum(cost), sum(saved_cost), sum(latency_ms)
FROM usage WHERE id > :after GROUP BY 1, 2, 3, 4, 5, 6
ON CONFLICT ({_USAGE_KEY}) DO UPDATE SET
    {', '.join(f'{c} = {c} + excluded.{c}' for c in _USAGE_SUMS)}
"""
_FOLD_LATENCY = """
INSERT INTO latency_hourly (hour, metric, bucket, count)
SELECT {hour}, '{metric}', latency_bucket({column}), count(*)
FROM usage WHERE id > :after AND status < 400 AND api = '{api}' AND {column} IS NOT NULL
GROUP BY 1, 3
ON CONFLICT (hour, metric, bucket) DO UPDATE SET count = count + excluded.count
"""
FOLD_REFUSALS = f"""
INSERT INTO refusals_hourly (hour, tenant, api, status, code, count)
SELECT {_HOUR}, coalesce(tenant, ''), api, status, code, sum(count)
FROM refusals WHERE id > :after GROUP BY 1, 2, 3, 4, 5
ON CONFLICT (hour, tenant, api, status, code) DO UPDATE SET count = count + excluded.count
"""
LATENCY_METRICS = {"latency": "latency_ms", "ttft": "ttft_ms"}
FOLD_USAGE: tuple[str, ...] = (
    _FOLD_USAGE,
    *(_FOLD_LATENCY.format(hour=_HOUR, metric=m, column=c, api=CHAT_API)
      for m, c in LATENCY_METRICS.items()),
)
BACKFILL: tuple[str, ...] = tuple(s.replace(":after", "0") for s in FOLD_USAGE)
"""Folds the rows written before the roll-ups existed (run once, by the migration)."""


def latency_bucket(ms: float | None) -> int | None:
    """The histogram bucket of a latency in milliseconds."""
    if ms is None:
        return None
    return math.floor(math.log(max(ms, _LATENCY_FLOOR_MS) / _LATENCY_FLOOR_MS) / _LOG_RATIO)


def bucket_value(bucket: int) -> float:
    """The value a percentile falling in ``bucket`` is reported as: its geometric middle."""
    return float(_LATENCY_FLOOR_MS * LATENCY_RATIO ** (bucket + 0.5))


def histogram_quantile(counts: Iterable[tuple[int, int]], q: float) -> float | None:
    """Nearest-rank quantile ``q`` of a histogram given as (bucket, count) pairs."""
    ordered = sorted(counts)
    total = sum(c for _, c in ordered)
    if not total:
        return None
    seen = 0
    for bucket, count in ordered:
        seen += count
        if seen / total >= q:
            return bucket_value(bucket)
    return bucket_value(ordered[-1][0])


def whole_hours(since: float, until: float) -> tuple[float, float]:
    """``[h0, h1)``: the whole UTC hours inside ``[since, until)``, which the roll-ups serve;
    ``(until, until)`` when there is none."""
    h0 = math.ceil(since / HOUR_S) * HOUR_S
    h1 = math.floor(until / HOUR_S) * HOUR_S
    return (h0, h1) if h1 > h0 else (until, until)


def window_rows(hourly: str, raw: str, hourly_table: str = "usage_hourly",
                 raw_table: str = "usage") -> str:
    """Rows of ``[:since, :until)``: whole hours ``[:h0, :h1)`` from the roll-up, the partial
    hours at both ends from the raw rows (``hourly`` and ``raw`` select the same columns)."""
    return (f"SELECT {hourly} FROM {hourly_table} WHERE hour >= :h0 AND hour < :h1 "
            f"UNION ALL SELECT {raw} FROM {raw_table} WHERE ts >= :since AND ts < :h0 "
            f"UNION ALL SELECT {raw} FROM {raw_table} WHERE ts >= :h1 AND ts < :until")


def window_params(since: float, until: float, **more: Any) -> dict[str, Any]:
    """The parameters of ``window_rows`` for ``[since, until)``."""
    h0, h1 = whole_hours(since, until)
    return {"since": since, "until": until, "h0": h0, "h1": h1, **more}


async def register_functions(db: aiosqlite.Connection) -> None:
    """Give ``db`` the SQL function the histograms are built with."""
    await db.create_function("latency_bucket", 1, latency_bucket, deterministic=True)
