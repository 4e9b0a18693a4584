"""The ledger's hourly roll-ups: their tables, the latency histogram's buckets, and the SQL that
folds freshly written rows into them and reads a window back.

A dashboard window of a day or a week would otherwise read every raw row (a million at ~6,000
requests an hour); the roll-ups hold, per UTC hour, counts and sums by requested model,
answering model, deployment, route and API (``usage_hourly``; not by tenant, which would
multiply its rows by the tenants: per tenant figures come from ``usage_daily``), latency
histograms of the generation APIs (``latency_hourly``: log-spaced buckets ``LATENCY_RATIO``
wide, so a percentile read from them is within half a bucket, about 2.5 %, of the exact one)
and refusal counts (``refusals_hourly``). A missing text value is stored as ``''`` so that it
can be part of a primary key.

The SQLite ledger runs ``FOLD_USAGE`` and ``FOLD_REFUSALS`` in the transaction that inserts the
rows; the PostgreSQL one folds the same sums in Python (``usage_hourly_rows`` and the two
beside it) and upserts them in its transaction; either way a roll-up never disagrees with its
rows after a crash. ``register_functions`` gives a SQLite connection the one SQL function the
histograms need (``latency_bucket``; PostgreSQL's is created by migration 0003); the store and
the dashboard's reader call it. ``window_rows`` reads a window back in SQL both engines accept:
whole hours from a roll-up, the partial hours at its ends from the raw rows. Touches nothing
itself: it only holds schema text, SQL and arithmetic.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import aiosqlite

HOUR_S = 3600
LATENCY_RATIO = 1.05
_LOG_RATIO = math.log(LATENCY_RATIO)
_LATENCY_FLOOR_MS = 0.01
CHAT_API = "chat"
EMBEDDINGS_API = "embeddings"
"""The ledger's ``api`` of an embeddings call: ``latency_hourly`` and the percentiles leave
these out, so that a fast local embedding does not hide a slow provider."""

SCHEMA: tuple[str, ...] = (
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
"""SQLite migration 3 (PostgreSQL's is ``0003_rollups.sql``)."""

_HOUR = f"CAST(ts / {HOUR_S} AS INTEGER) * {HOUR_S}"
_USAGE_KEY = "hour, model, answered_model, deployment, route, api"
USAGE_SUMS = ("requests", "errors", "cache_hits", "cache_misses", "cache_bypasses", "escalated",
              "tokens_in", "tokens_out", "cost", "saved_cost", "latency_ms_sum")
_FOLD_USAGE = f"""
INSERT INTO usage_hourly ({_USAGE_KEY}, {', '.join(USAGE_SUMS)})
SELECT {_HOUR}, model, coalesce(answered_model, ''), coalesce(deployment, ''),
       coalesce(route, ''), api, count(*), sum(status >= 400), sum(cache IS 'hit'),
       sum(cache IS 'miss'), sum(cache IS 'bypass'), sum(escalations > 0), sum(tokens_in),
       sum(tokens_out), sum(cost), sum(saved_cost), sum(latency_ms)
FROM usage WHERE id > :after GROUP BY 1, 2, 3, 4, 5, 6
ON CONFLICT ({_USAGE_KEY}) DO UPDATE SET
    {', '.join(f'{c} = {c} + excluded.{c}' for c in USAGE_SUMS)}
"""
_FOLD_LATENCY = """
INSERT INTO latency_hourly (hour, metric, bucket, count)
SELECT {hour}, '{metric}', latency_bucket({column}), count(*)
FROM usage WHERE id > :after AND status < 400 AND api <> '{api}' AND {column} IS NOT NULL
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
    *(_FOLD_LATENCY.format(hour=_HOUR, metric=m, column=c, api=EMBEDDINGS_API)
      for m, c in LATENCY_METRICS.items()),
)
BACKFILL: tuple[str, ...] = tuple(s.replace(":after", "0") for s in FOLD_USAGE)
"""Folds the rows written before the roll-ups existed (run once, by the migration)."""


def hour_of(ts: float) -> int:
    """The start of ``ts``'s UTC hour, as the roll-ups key it."""
    return int(ts // HOUR_S) * HOUR_S


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


# The same sums in Python, for a backend that cannot fold by row id (PostgreSQL) ------------

Row = dict[str, Any]


def usage_hourly_rows(rows: Iterable[Row]) -> list[tuple[Any, ...]]:
    """Ledger rows (as column → value) summed as ``usage_hourly`` rows (``_USAGE_KEY`` then
    ``USAGE_SUMS``), as ``FOLD_USAGE`` sums them."""
    sums: defaultdict[tuple[Any, ...], list[Any]] = defaultdict(
        lambda: [0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0])
    for r in rows:
        key = (hour_of(r["ts"]), r["model"], r["answered_model"] or "", r["deployment"] or "",
               r["route"] or "", r["api"])
        s = sums[key]
        for i, add in enumerate((1, r["status"] >= 400, r["cache"] == "hit",
                                 r["cache"] == "miss", r["cache"] == "bypass",
                                 r["escalations"] > 0, r["tokens_in"], r["tokens_out"],
                                 r["cost"], r["saved_cost"], r["latency_ms"])):
            s[i] += add
    return [(*key, *s) for key, s in sums.items()]


def latency_hourly_rows(rows: Iterable[Row]) -> list[tuple[Any, ...]]:
    """Ledger rows counted as ``latency_hourly`` rows (hour, metric, bucket, count)."""
    counts: defaultdict[tuple[int, str, int], int] = defaultdict(int)
    for r in rows:
        if r["status"] >= 400 or r["api"] == EMBEDDINGS_API:
            continue
        for metric, column in LATENCY_METRICS.items():
            bucket = latency_bucket(r[column])
            if bucket is not None:
                counts[(hour_of(r["ts"]), metric, bucket)] += 1
    return [(*key, n) for key, n in counts.items()]


def refusals_hourly_rows(rows: Iterable[Row]) -> list[tuple[Any, ...]]:
    """Refusal rows (as column → value) counted as ``refusals_hourly`` rows."""
    counts: defaultdict[tuple[Any, ...], int] = defaultdict(int)
    for r in rows:
        counts[(hour_of(r["ts"]), r["tenant"] or "", r["api"], r["status"], r["code"])] += (
            r["count"])
    return [(*key, n) for key, n in counts.items()]


def as_dicts(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[Row]:
    return [dict(zip(columns, r, strict=True)) for r in rows]


# Reading a window back -------------------------------------------------------------------


def whole_hours(since: float, until: float) -> tuple[float, float]:
    """``[h0, h1)``: the whole UTC hours inside ``[since, until)``, which the roll-ups serve;
    ``(until, until)`` when there is none."""
    h0 = math.ceil(since / HOUR_S) * HOUR_S
    h1 = math.floor(until / HOUR_S) * HOUR_S
    return (h0, h1) if h1 > h0 else (until, until)


def window_rows(hourly: str, raw: str, hourly_table: str = "usage_hourly",
                raw_table: str = "usage", raw_where: str = "", hourly_where: str = "") -> str:
    """Rows of ``[:since, :until)``: whole hours ``[:h0, :h1)`` from the roll-up, the partial
    hours at both ends from the raw rows (``hourly`` and ``raw`` select the same columns;
    ``raw_where`` and ``hourly_where`` add conditions, each ending in ``AND``)."""
    return (f"SELECT {hourly} FROM {hourly_table} "
            f"WHERE {hourly_where}hour >= :h0 AND hour < :h1 "
            f"UNION ALL SELECT {raw} FROM {raw_table} WHERE {raw_where}ts >= :since AND ts < :h0 "
            f"UNION ALL SELECT {raw} FROM {raw_table} WHERE {raw_where}ts >= :h1 AND ts < :until")


def window_params(since: float, until: float, **more: Any) -> dict[str, Any]:
    """The parameters of ``window_rows`` for ``[since, until)`` (as floats: PostgreSQL keeps
    hours as double precision, like every other time)."""
    h0, h1 = whole_hours(since, until)
    return {"since": float(since), "until": float(until), "h0": float(h0), "h1": float(h1),
            **more}


async def register_functions(db: aiosqlite.Connection) -> None:
    """Give ``db`` the SQL function the histograms are built with."""
    await db.create_function("latency_bucket", 1, latency_bucket, deterministic=True)
