"""The in-memory table of cache entries: by id in least-recently-used order, by exact key (and,
for entries stored under a semantic policy, by loose key: case and punctuation aside), and by
namespace. A mirror of SQLite's rows without their vectors and answers, rebuilt at start-up;
lookups read only this and the vector index, and fetch answers only for an exact hit or for
semantic candidates at or above the serving rule's floor. Entries stored under a semantic policy
are also found by the loose key of their text with its typos folded (``fold``, the cache's
speller), so that a typo on either side still meets its stored question (``typo_match``). Not
thread-safe: used on the event loop only.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable

from gateway.cache.fingerprint import loose_key
from gateway.cache.store import StoredEntry


class EntryTable:
    def __init__(self, fold: Callable[[str], str] | None = None) -> None:
        self._by_id: OrderedDict[int, StoredEntry] = OrderedDict()
        self._exact: dict[bytes, int] = {}
        self._folded: dict[bytes, int] = {}  # loose keys of texts whose typos folding changed
        self._folded_of: dict[int, bytes] = {}  # and back, so removing never folds again
        self._fold = fold
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
            if (folded := self._folded_key(entry)) is not None:
                self._folded.setdefault(folded, entry.entry_id)
                self._folded_of[entry.entry_id] = folded
        self._namespaces.setdefault(entry.namespace, set()).add(entry.entry_id)

    def ids(self) -> set[int]:
        return set(self._by_id)

    def get(self, entry_id: int) -> StoredEntry | None:
        return self._by_id.get(entry_id)

    def exact(self, exact_key: bytes) -> StoredEntry | None:
        entry_id = self._exact.get(exact_key)
        return None if entry_id is None else self._by_id.get(entry_id)

    def typo_match(self, namespace: str, fingerprint: str, text: str,
                   folded: str) -> StoredEntry | None:
        """An entry asked by ``text`` once typos are folded on both sides (``folded``: this
        text's fold), case and punctuation aside; None when there is none."""
        key = loose_key(namespace, fingerprint, folded)
        entry_id = self._folded.get(key)
        if entry_id is None and folded != text:
            entry_id = self._exact.get(key)
        return None if entry_id is None else self._by_id.get(entry_id)

    def _folded_key(self, entry: StoredEntry) -> bytes | None:
        if self._fold is None:
            return None
        folded = self._fold(entry.text)
        return None if folded == entry.text else loose_key(entry.namespace, entry.fingerprint,
                                                           folded)

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
        folded = self._folded_of.pop(entry_id, None)
        if folded is not None and self._folded.get(folded) == entry_id:
            del self._folded[folded]
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
