"""The in-memory table of cache entries: by id in least-recently-used order, by exact key (and,
for entries stored under a semantic policy, by loose key: case and punctuation aside), and by
namespace. A mirror of SQLite's rows without their vectors and answers, rebuilt at start-up;
lookups read only this and the vector index, and fetch answers only for an exact hit or for
semantic candidates at or above the serving rule's floor. Not thread-safe: used on the event
loop only.
"""

from __future__ import annotations

import sys
from collections import OrderedDict

from gateway.cache.fingerprint import loose_key
from gateway.cache.store import StoredEntry


class EntryTable:
    def __init__(self) -> None:
        self._by_id: OrderedDict[int, StoredEntry] = OrderedDict()
        self._exact: dict[bytes, int] = {}
        self._namespaces: dict[str, set[int]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, exact_key: bytes) -> bool:
        return exact_key in self._exact

    def add(self, entry: StoredEntry) -> None:
        entry = StoredEntry(
            # Many entries share a namespace and a context: keep one copy of each string.
            entry.entry_id, sys.intern(entry.namespace), sys.intern(entry.fingerprint),
            entry.exact_key, entry.text, entry.has_vector, entry.created_at, entry.expires_at,
        )
        self._by_id[entry.entry_id] = entry
        self._exact[entry.exact_key] = entry.entry_id
        if entry.has_vector:  # stored under a semantic policy: case and punctuation are loose
            self._exact.setdefault(_loose(entry), entry.entry_id)
        self._namespaces.setdefault(entry.namespace, set()).add(entry.entry_id)

    def ids(self) -> set[int]:
        return set(self._by_id)

    def get(self, entry_id: int) -> StoredEntry | None:
        return self._by_id.get(entry_id)

    def exact(self, exact_key: bytes) -> StoredEntry | None:
        entry_id = self._exact.get(exact_key)
        return None if entry_id is None else self._by_id.get(entry_id)

    def touch(self, entry_id: int) -> None:
        """Mark as just used: the last to be evicted."""
        if entry_id in self._by_id:
            self._by_id.move_to_end(entry_id)

    def remove(self, entry_id: int) -> StoredEntry | None:
        entry = self._by_id.pop(entry_id, None)
        if entry is None:
            return None
        for key in (entry.exact_key, _loose(entry)):
            if self._exact.get(key) == entry_id:
                del self._exact[key]
        ids = self._namespaces.get(entry.namespace)
        if ids is not None:
            ids.discard(entry_id)
            if not ids:
                del self._namespaces[entry.namespace]
        return entry

    def least_recent(self, count: int) -> list[StoredEntry]:
        out: list[StoredEntry] = []
        for entry in self._by_id.values():
            if len(out) >= count:
                break
            out.append(entry)
        return out

    def in_namespace(self, namespace: str) -> list[int]:
        return sorted(self._namespaces.get(namespace, ()))

    def namespaces(self) -> dict[str, int]:
        return {ns: len(ids) for ns, ids in self._namespaces.items()}

    def expired(self, now: float) -> list[StoredEntry]:
        return [e for e in self._by_id.values() if e.expires_at is not None and e.expires_at <= now]


def _loose(entry: StoredEntry) -> bytes:
    return loose_key(entry.namespace, entry.fingerprint, entry.text)
