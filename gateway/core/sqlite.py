"""Opening the gateway's SQLite files the one way they are all opened.

Every store (tenants and ledger, routing signals, the semantic cache) keeps one aiosqlite
connection in WAL mode with ``synchronous=NORMAL`` (a crash loses at most the last commits, never
the file) and waits up to five seconds for another connection's write lock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

BUSY_TIMEOUT_MS = 5000
MAX_INT = 2**63 - 1
"""The largest INTEGER SQLite holds: a bigger Python int fails the whole statement."""
Params = Sequence[Any] | Mapping[str, Any]
"""A statement's parameters: a sequence for ``?`` placeholders, a mapping for ``:name`` ones
(the PostgreSQL backends rewrite either to ``$n``)."""


async def open_wal(
    path: Path,
    setup: Callable[[aiosqlite.Connection], Awaitable[object]],
    *,
    autocommit: bool = True,
) -> aiosqlite.Connection:
    """Connect to ``path`` (creating its folder), switch to WAL, then run ``setup`` (schema,
    migrations); the connection is closed again if anything fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await aiosqlite.connect(path, isolation_level=None if autocommit else "")
    try:
        await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = NORMAL")
        await setup(db)
    except BaseException:
        await db.close()
        raise
    return db
