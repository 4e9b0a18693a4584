"""The ledger's sustained write rate into PostgreSQL, beside SQLite's, in one run.

    .venv/bin/python bench/bench_pg_ledger.py [--seconds 10] [--json]

Starts Debian's PostgreSQL on a free port in a temporary folder, durable (fsync and synchronous
commit on, as in production), migrates a fresh database, then for each variant keeps a ledger's
queue fed for ``--seconds`` (the producer of ``bench_auth.py``: 500-row batches, the queue never
above half its bound) and reports rows/s written, drops and resident memory:

- sqlite: the embedded default, a WAL file on this disk (the baseline);
- postgres-copy: ``PgStore.write_usage`` as shipped: COPY, then the daily and hourly roll-up
  upserts, one transaction per batch;
- postgres-executemany: the same transaction with the rows sent by ``executemany`` INSERTs instead
  of COPY, the alternative COPY was chosen over.

Variants run one after another on the same machine, so their ratios hold while absolute figures
drift with the load of the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.postgres_fixtures

from bench_auth import bench_ledger, sustained_ledger

from gateway.core.postgres import Database
from gateway.tenants.pg_store import PgStore, fold_usage
from gateway.tenants.store import USAGE_COLUMNS
from tests.postgres_fixtures import create_database, running_postgres

_INSERT = (f"INSERT INTO usage ({', '.join(USAGE_COLUMNS)}) VALUES "
           f"({', '.join(f'${i}' for i in range(1, len(USAGE_COLUMNS) + 1))})")


class ExecutemanyStore(PgStore):
    """``PgStore`` with its COPY replaced by INSERTs, to measure what COPY buys."""

    async def write_usage(
        self, rows: Sequence[tuple[Any, ...]], failed: Sequence[tuple[Any, ...]] = (),
        refusals: Sequence[tuple[Any, ...]] = (),
    ) -> None:
        assert not failed and not refusals  # the benchmark's producer writes usage rows only
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(_INSERT, rows)
            await fold_usage(conn, rows)


async def postgres_variant(url: str, store_class: type[PgStore], seconds: float) -> dict[str, Any]:
    database = await Database.open_url(url)
    try:
        result = await sustained_ledger(store_class(database), seconds)
        result["rows_in_table"] = await database.scalar("SELECT count(*) FROM usage")
        result["rolled_up"] = await database.scalar("SELECT sum(requests) FROM usage_daily")
        return result
    finally:
        await database.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with running_postgres(durable=True) as server, tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = await bench_ledger(Path(tmp), args.seconds)
        for name, store_class in (("postgres-copy", PgStore),
                                  ("postgres-executemany", ExecutemanyStore)):
            url = await create_database(server, name.replace("-", "_"))
            results[name] = await postgres_variant(url, store_class, args.seconds)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'variant':<22} {'rows/s':>9} {'written':>9} {'dropped':>8} {'RSS MiB':>8}")
    for name, r in results.items():
        print(f"{name:<22} {r['rows_per_s']:>9} {r['rows_written']:>9} {r['dropped']:>8} "
              f"{r['rss_mib_last_s']:>8}")


if __name__ == "__main__":
    asyncio.run(main())
