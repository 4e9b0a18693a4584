"""``gateway migrate``: bring the shared database's schema up to date, and optionally copy an
embedded deployment into it.

    gateway migrate [--config PATH]                       apply the pending migrations
    gateway migrate --from-sqlite DATA_DIR [--config P]   then copy DATA_DIR's SQLite files

Safe to run again and beside starting replicas (they take the same advisory lock). The database
URL comes from the configuration's ``[cluster]`` table; it is never printed. Touches the shared
database and, read-only, the SQLite files of ``--from-sqlite``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

from gateway.core.config import Settings
from gateway.core.postgres import Database, DatabaseError, migrations
from gateway.core.sqlite_copy import SqliteFiles, copy_sqlite


def add_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: Callable[[argparse.ArgumentParser], None],
) -> None:
    parser = subparsers.add_parser(
        "migrate", help="apply the shared database's migrations ([cluster] database_url)"
    )
    common(parser)
    parser.add_argument(
        "--from-sqlite", type=Path, metavar="DATA_DIR", default=None,
        help="then copy this embedded deployment's SQLite files into the (empty) database",
    )
    parser.set_defaults(handler=run_migrate, providers_needed=False)  # only the database


def sqlite_files(settings: Settings, data_dir: Path) -> SqliteFiles:
    """The files an embedded deployment with these settings keeps in ``data_dir``."""
    return SqliteFiles(
        tenants=data_dir / settings.tenants.database.name,
        cache=data_dir / settings.cache.database.name,
        signals=data_dir / settings.routing.signals_path(data_dir).name,
    )


def run_migrate(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.cluster.shared_database:
        print("gateway migrate: no shared database is configured: set [cluster] "
              "database_url_env (default GATEWAY_DATABASE_URL)", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_migrate(settings, args.from_sqlite))
    except DatabaseError as exc:
        print(f"gateway migrate: {exc}", file=sys.stderr)
        return 1


async def _migrate(settings: Settings, from_sqlite: Path | None) -> int:
    database = await Database.open(settings.cluster, migrate=False)
    try:
        applied = await database.migrate()
        latest = migrations()[-1].version
        print(f"schema at version {latest}: applied {len(applied)} migration(s) now"
              + (f" ({', '.join(map(str, applied))})" if applied else ""))
        if from_sqlite is not None:
            if not from_sqlite.is_dir():
                print(f"gateway migrate: {from_sqlite} is not a folder", file=sys.stderr)
                return 2
            copied = await copy_sqlite(database, sqlite_files(settings, from_sqlite))
            for table, count in copied.items():
                print(f"copied {count} rows into {table}")
    finally:
        await database.close()
    return 0
