"""The seam between the semantic cache and its database: ``CacheBackend`` and ``AnswerSource``.

Two backends serve it: ``store.CacheStore`` (a SQLite file of this replica's own) and
``pg_store.PgCacheStore`` (the shared PostgreSQL database). With the shared one, every replica
stores into one table and hears of its peers' writes as ``Notice``s (PostgreSQL LISTEN/NOTIFY,
sent in the writing transaction, so a notice never names a row its reader cannot see yet); the
SQLite backend has no peers and sends none.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from gateway.cache.index import FloatArray, VectorSpace
from gateway.cache.store import NewEntry, StoredEntry


@dataclass(frozen=True, slots=True)
class Notice:
    """What another replica did: stored entries, removed entries, or dropped a namespace; or
    ``resync``: notices may have been missed, compare everything with the database."""

    kind: Literal["stored", "removed", "dropped", "resync"]
    ids: tuple[int, ...] = ()
    namespace: str = ""


class AnswerSource(Protocol):
    def bodies(self, ids: Sequence[int], fingerprint: str) -> dict[int, bytes]:
        """The answers of ``ids`` stored under ``fingerprint``; blocking, from a worker thread."""
        ...

    async def body(self, entry_id: int) -> bytes | None: ...

    def close(self) -> None: ...


class CacheBackend(Protocol):
    @property
    def reader(self) -> AnswerSource: ...

    async def close(self) -> None: ...
    async def meta(self, key: str) -> str | None: ...
    async def adopt_space(self, space: VectorSpace | None) -> int: ...
    async def insert(self, entries: Sequence[NewEntry]) -> list[int]: ...
    def entries(self) -> AsyncIterator[StoredEntry]: ...
    def vectors(self, namespace: str, dim: int) -> AsyncIterator[tuple[list[int], FloatArray]]: ...
    async def vectors_by_id(
        self, ids: Sequence[int], dim: int
    ) -> tuple[list[int], FloatArray]: ...
    async def stored_by_id(self, ids: Sequence[int]) -> list[StoredEntry]: ...
    async def delete(self, ids: Sequence[int]) -> None: ...
    async def delete_namespace(self, namespace: str) -> int: ...
    async def record_hits(self, hits: dict[int, tuple[float, int]]) -> None: ...
    async def ids(self) -> set[int]: ...
    async def count(self) -> int: ...

    async def listen(self, on_notice: Callable[[Notice], None]) -> None:
        """Call ``on_notice`` (on the event loop) for each of the peers' changes, until
        ``close``; a backend without peers never calls it."""
        ...
