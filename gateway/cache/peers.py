"""Following the other replicas: their stored and removed cache entries, made visible here.

With a shared backend every replica writes into one table and announces each change
(``backend.Notice``). ``Peers`` queues those notices as they arrive and, in the cache's
``cache-peers`` task, applies each to this replica's in-memory table and hnswlib graphs, under the
cache's flush lock so that it never interleaves with this replica's own batches. Entries a peer
stored are read back from the database (their row and vector), never sent in the notice; after
notices may have been lost (a ``resync``), the ids in memory are compared with the table's.
Touches only this replica's memory; the database already holds the change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from gateway.cache.backend import CacheBackend
from gateway.cache.entries import EntryTable
from gateway.cache.index import IndexSet, VectorSpace
from gateway.cache.notice import Notice
from gateway.cache.store import StoredEntry

log = logging.getLogger(__name__)


async def unindex(index: IndexSet | None, removed: list[StoredEntry]) -> None:
    """Take ``removed`` entries' vectors out of their namespaces' graphs."""
    if index is None:
        return
    by_namespace: dict[str, list[int]] = {}
    for e in removed:
        if e.has_vector:
            by_namespace.setdefault(e.namespace, []).append(e.entry_id)
    for namespace, ids in by_namespace.items():
        await index.remove(namespace, ids)


class Peers:
    """The queue of the peers' notices, and how each changes this replica's view."""

    def __init__(self, table: EntryTable, index: IndexSet | None, store: CacheBackend | None,
                 space: VectorSpace | None, lock: asyncio.Lock) -> None:
        self.notices: asyncio.Queue[Notice] = asyncio.Queue()
        self.applied = 0
        self._table = table
        self._index = index
        self._store = store
        self._space = space
        self._lock = lock

    async def follow(self) -> None:
        """Apply notices as they come, until cancelled."""
        while True:
            notice = await self.notices.get()
            try:
                async with self._lock:
                    await self.apply(notice)
            except Exception:  # a notice that fails must not stop the ones after it
                log.exception("cache: applying a peer's %s notice failed", notice.kind)
            self.applied += 1

    async def apply(self, notice: Notice) -> None:
        if notice.kind == "dropped":
            for entry_id in self._table.in_namespace(notice.namespace):
                self._table.remove(entry_id)
            if self._index is not None:
                await self._index.drop(notice.namespace)
        elif notice.kind == "removed":
            await self._forget(notice.ids)
        elif notice.kind == "stored":
            await self._adopt([i for i in notice.ids if self._table.get(i) is None])
        elif self._store is not None:  # resync: whatever the missed notices said
            stored, known = await self._store.ids(), self._table.ids()
            await self._forget(sorted(known - stored))
            await self._adopt(sorted(stored - known))
            log.info("cache: re-read after missed notices: %d entries added, %d removed",
                     len(stored - known), len(known - stored))

    async def _forget(self, ids: Sequence[int]) -> None:
        gone = [e for i in ids if (e := self._table.remove(i)) is not None]
        await unindex(self._index, gone)

    async def _adopt(self, ids: Sequence[int]) -> None:
        if self._store is None or not ids:
            return
        entries = await self._store.stored_by_id(ids)
        await self._index_stored(entries)
        for entry in entries:  # after the graph: a lookup finds both or neither
            self._table.add(entry)

    async def _index_stored(self, entries: list[StoredEntry]) -> None:
        if self._index is None or self._store is None or self._space is None:
            return
        namespaces = {e.entry_id: e.namespace for e in entries if e.has_vector}
        if not namespaces:
            return
        found, vectors = await self._store.vectors_by_id(sorted(namespaces), self._space.dim)
        for namespace in set(namespaces.values()):
            rows = [i for i, entry_id in enumerate(found) if namespaces[entry_id] == namespace]
            if rows:
                await self._index.add(namespace, [found[i] for i in rows], vectors[rows])
