"""The in-memory table of cache entries: by id in least-recently-used order, by exact key (and,
for entries stored under a semantic policy, by loose key: case and punctuation aside), and by
namespace. A mirror of SQLite's rows without their vectors and answers, rebuilt at start-up;
lookups read only this and the vector index, and fetch answers only for an exact hit or for
semantic candidates at or above the serving rule's floor. Entries stored under a semantic policy
are also found by the loose key of their text with its typos folded (``typo_keys``), so that a
typo on either side still meets its stored question (``typo_match``). The table never folds a
text itself: folding every stored text at start-up held the loop for over a second at 100,000
entries, so an entry comes in without its typo key and waits in ``unkeyed`` until the cache
hands the key over (``set_typo_keys``: at once for its own writes, from a thread for what it
loads or a peer stored). Not thread-safe: used on the event loop only.
"""

from __future__ import annotations

import asyncio
import sys
from collections import OrderedDict
from collections.abc import Iterable

from gateway.cache.fingerprint import loose_key
from gateway.cache.store import StoredEntry


class EntryTable:
    def __init__(self, typos: bool = False) -> None:
        """``typos``: whether entries are to be found by their typo keys (folding is on)."""
        self._by_id: OrderedDict[int, StoredEntry] = OrderedDict()
        self._exact: dict[bytes, int] = {}
        self._folded: dict[bytes, int] = {}  # loose keys of texts whose typos folding changed
        self._folded_of: dict[int, bytes] = {}  # and back, so removing never folds again
        self._typos = typos
        self._unkeyed: dict[int, None] = {}  # semantic entries awaiting their typo key, in order
        self.unkeyed_added = asyncio.Event()
        self.all_keyed = asyncio.Event()
        self.all_keyed.set()
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
            if self._typos:
                self._unkeyed[entry.entry_id] = None
                self.unkeyed_added.set()
                self.all_keyed.clear()
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

    def unkeyed(self, count: int) -> list[StoredEntry]:
        """Up to ``count`` entries still waiting for their typo key, the longest-waiting first."""
        out: list[StoredEntry] = []
        for entry_id in self._unkeyed:
            if len(out) >= count:
                break
            out.append(self._by_id[entry_id])
        return out

    @property
    def unkeyed_count(self) -> int:
        return len(self._unkeyed)

    @property
    def typo_key_count(self) -> int:
        """Entries found by a typo key: at most one per entry, gone with it."""
        return len(self._folded_of)

    def set_typo_keys(self, keys: Iterable[tuple[int, bytes | None]]) -> None:
        """Register typo keys (None: folding leaves the text as it is); an entry removed while
        its key was being made is skipped, and the first entry with a key keeps it."""
        for entry_id, key in keys:
            if entry_id not in self._unkeyed:
                continue
            del self._unkeyed[entry_id]
            if key is not None:
                self._folded.setdefault(key, entry_id)
                self._folded_of[entry_id] = key
        self._check_all_keyed()

    def _check_all_keyed(self) -> None:
        """Once the last waiting entry is keyed or removed: ``all_keyed``, and a fresh dict."""
        if not self._unkeyed and not self.all_keyed.is_set():
            self._unkeyed = {}  # a dict never shrinks: the 100,000 slots of an open are handed back
            self.all_keyed.set()

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
        self._unkeyed.pop(entry_id, None)
        self._check_all_keyed()
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
