"""Copying an embedded deployment's SQLite files into the shared PostgreSQL database.

``copy_sqlite(database, files)`` reads the tenants database (tenants, keys, meta, the ledger,
failed attempts and refusals, and their daily and hourly roll-ups), the cache database (entries
and their meta) and the routing signals, whichever exist, and writes them with COPY in one
transaction: all or nothing; routing vectors take the ts of their last use, as migration 4
sets it. Ids are kept (cache entry ids are hnswlib labels, ledger ids order the ledger) and the
identity sequences moved past them.
It refuses a database that already holds tenants, usage or cache entries: copying is for moving
a deployment once, not for merging two. Reads the SQLite files read-only; writes only the tables
of ``gateway/core/migrations``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.core.postgres import Database, DatabaseError, migrations

log = logging.getLogger(__name__)

_BATCH_ROWS = 5000
_KEYED = {"meta": "key", "cache_meta": "key"}
"""Tables the migrations already filled (``meta.revision``): rows are upserted, not copied."""
_IDENTITY = ("usage", "failed_attempts", "refusals", "cache_entries", "signals")
_MUST_BE_EMPTY = ("tenants", "usage", "cache_entries", "signals")
_VECTORS_LAST_USE = "signal_vectors_last_use"
"""The migration that sets each routing vector's ts to its last use, run again on copied rows."""


@dataclass(frozen=True, slots=True)
class SqliteFiles:
    """The embedded deployment's files; a missing one is skipped."""

    tenants: Path
    cache: Path
    signals: Path


PLAN: tuple[tuple[str, str, str], ...] = (
    # (which file, its table, the shared database's table), parents before children
    ("tenants", "meta", "meta"),
    ("tenants", "tenants", "tenants"),
    ("tenants", "api_keys", "api_keys"),
    ("tenants", "usage", "usage"),
    ("tenants", "usage_daily", "usage_daily"),
    ("tenants", "usage_hourly", "usage_hourly"),
    ("tenants", "latency_hourly", "latency_hourly"),
    ("tenants", "failed_attempts", "failed_attempts"),
    ("tenants", "refusals", "refusals"),
    ("tenants", "refusals_hourly", "refusals_hourly"),
    ("cache", "meta", "cache_meta"),
    ("cache", "entries", "cache_entries"),
    ("signals", "signals", "signals"),
    ("signals", "vectors", "signal_vectors"),
)

Convert = Callable[[Any], Any]
_CONVERT: dict[str, Convert] = {
    "boolean": lambda v: None if v is None else bool(v),
    "double precision": lambda v: None if v is None else float(v),
    "bigint": lambda v: None if v is None else int(v),
    "integer": lambda v: None if v is None else int(v),
    "bytea": lambda v: None if v is None else bytes(v),
    "text": lambda v: None if v is None else str(v),
}


async def copy_sqlite(database: Database, files: SqliteFiles) -> dict[str, int]:
    """Copy every table of the plan that exists; rows copied per shared table."""
    copied: dict[str, int] = {}
    async with database.pool.acquire() as conn, conn.transaction():
        for table in _MUST_BE_EMPTY:
            if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
                raise DatabaseError(f"the shared database already has rows in {table}: "
                                    "copy into a freshly migrated, empty database")
        for which, source, target in PLAN:
            path: Path = getattr(files, which)
            types = {str(r[0]): str(r[1]) for r in await conn.fetch(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = $1 "
                "ORDER BY ordinal_position", target,
            )}
            count = 0
            for columns, rows in _read(path, source, types):
                if target in _KEYED:
                    await _upsert(conn, target, columns, rows)
                else:
                    await conn.copy_records_to_table(target, records=rows, columns=columns)
                count += len(rows)
            copied[target] = count
        if copied.get("signal_vectors"):
            # A file the gateway has not opened since signals expire (schema 1 or 2) holds
            # each vector's first write as its ts: migration 4 moves it to its last use, as it
            # did for the vectors stored before it, or the sweep takes vectors still in use.
            (last_use,) = [m.sql for m in migrations() if m.name == _VECTORS_LAST_USE]
            await conn.execute(last_use)
        for table in _IDENTITY:
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
            )
    return copied


async def _upsert(conn: Any, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    key = _KEYED[table]
    marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
    await conn.executemany(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}", rows,
    )


def _read(path: Path, table: str, types: dict[str, str]
          ) -> Iterator[tuple[list[str], list[tuple[Any, ...]]]]:
    """Batches of one SQLite table's rows, in the shared table's columns and types."""
    if not path.exists():
        return
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        present = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        columns = [c for c in types if c in present]
        if not columns:
            return
        convert = [_CONVERT[types[c]] for c in columns]
        cursor = db.execute(f"SELECT {', '.join(columns)} FROM {table}")
        while rows := cursor.fetchmany(_BATCH_ROWS):
            yield columns, [tuple(f(v) for f, v in zip(convert, row, strict=True))
                            for row in rows]
    finally:
        db.close()
