"""The semantic cache: exact, then guarded semantic lookup of complete answers, and their storing.

``lookup(namespace, fingerprint, text, vector, policy)`` tries the exact tier (namespace,
fingerprint and normalised text as sent), then, for a ``semantic`` policy with a vector, the
namespace's hnswlib graph: the nearest entries with the same fingerprint, at or above the rule's
floor, are judged by the serving rule (``rule.Rule``: the guards, then the learned verifier or the
cosine-and-margin rule) in order of similarity; the first that passes is the hit. The semantic tier
reads texts with their typos folded (``key_text``; the caller embeds that text): a typo of a stored
prompt is a semantic hit, and the entry keeps the text as sent. A semantic lookup is one job in the
index pool: the search, then the answers of the neighbours at or above the floor
(``answers.AnswerReader``); an exact hit is one read in the reader's threads.
``store(...)`` only queues an entry (cheap, never blocks the request); the writer task writes
queued entries to SQLite in one transaction per batch, then adds their vectors to the graph, then
makes them visible. Expired and least-recently-used entries beyond ``max_entries`` are removed by
the same task. With a shared backend (``pg_store.PgCacheStore``) the peers' changes arrive as
notices, which a second task applies to this replica's table and graphs (``peers.Peers``).
``save()`` writes changed graphs; ``open`` loads them and reconciles them with the database
(``graphs.reconcile``). With typo folding on, a third task keys loaded and peer-stored entries'
texts by their folded form in a worker thread (``typo_keys.fill``), so that no start-up waits on
folding 100,000 texts.

Touches the cache database (or the backend it is given) and the index directory named in its
settings, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import numpy as np
import orjson

from gateway.cache import spelling
from gateway.cache.backend import AnswerSource, CacheBackend
from gateway.cache.entries import EntryTable
from gateway.cache.fingerprint import exact_key, loose_key
from gateway.cache.graphs import reconcile
from gateway.cache.index import (
    FloatArray,
    IndexSet,
    Neighbour,
    VectorSpace,
    as_vector,
    valid_vector,
)
from gateway.cache.peers import Peers, unindex
from gateway.cache.replay import uncacheable
from gateway.cache.rule import Rule, describe, serving_rule
from gateway.cache.spelling import KeyFolder, Speller
from gateway.cache.store import CacheStore, NewEntry, StoredEntry
from gateway.cache.text_features import Profile, profile
from gateway.cache.typo_keys import fill, typo_key
from gateway.core.cache_settings import CacheSettings, Policy
from gateway.core.lifecycle import stop_task
from gateway.core.postgres import STORAGE_ERRORS

log = logging.getLogger(__name__)

Json = dict[str, Any]
Clock = Callable[[], float]
_MAX_BATCH = 512
_LOOKUP_ERRORS: tuple[type[Exception], ...] = (RuntimeError, ValueError, *STORAGE_ERRORS)
"""What a broken cache raises during a lookup: the request goes on without the cache."""
_PROFILES = 4096  # guard profiles of stored texts kept between lookups


@dataclass(frozen=True, slots=True)
class Hit:
    entry_id: int
    kind: Literal["exact", "semantic"]
    score: float
    body: Json
    text: str
    created_at: float


class SemanticCache:
    """One cache: its database, graphs and in-memory table, and the tasks that keep them."""

    def __init__(self, settings: CacheSettings, space: VectorSpace | None,
                 store: CacheBackend | None, index: IndexSet | None, clock: Clock,
                 rule: Rule | None = None, speller: Speller | None = None) -> None:
        self.settings = settings
        self.speller = speller
        self._fold = KeyFolder(speller)
        self.space = space
        self.rule = rule or Rule(settings.threshold, settings.guards)
        self._store = store
        self._index = index
        self._clock = clock
        self._table = EntryTable(typos=speller is not None)
        self._pending: list[NewEntry] = []
        self._pending_keys: set[bytes] = set()
        self._hits: dict[int, tuple[float, int]] = {}
        self._flush_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._peers = Peers(self._table, index, store, space, self._flush_lock)
        self._peer_task: asyncio.Task[None] | None = None
        self._typo_task: asyncio.Task[None] | None = None
        self._last_save = 0.0
        self._stopping = False
        self._profiles: OrderedDict[int, Profile] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._store is not None

    @property
    def semantic(self) -> bool:
        return self._index is not None

    @classmethod
    async def open(cls, settings: CacheSettings, space: VectorSpace | None, *,
                   clock: Clock = time.time, store: CacheBackend | None = None) -> SemanticCache:
        """Open the database (``store``, else the SQLite file of the settings), rebuild the
        table, load or rebuild the graphs."""
        if not settings.enabled:
            return cls(settings, None, None, None, clock)
        store = store or await CacheStore.open(settings.database)
        index = IndexSet(space, settings.index) if space is not None else None
        speller = await asyncio.to_thread(spelling.load) \
            if settings.fold_typos and index is not None else None
        cache = cls(settings, space, store, index, clock, serving_rule(settings, space), speller)
        try:
            # Listening before loading: a peer's entry stored meanwhile is heard, not missed.
            await store.listen(cache._peers.notices.put_nowait)
            await store.adopt_space(space)
            await cache._load()
        except BaseException:
            await cache._close_resources()
            raise
        if speller is not None:  # the loaded rows' typo keys, made off the loop (``typo_keys``)
            cache._typo_task = asyncio.create_task(fill(cache._table, speller.fold),
                                                   name="cache-typo-keys")
        return cache

    def key_text(self, text: str) -> str:
        """The text the semantic tier reads for ``text``: its misspelt words folded
        (``spelling``; unchanged when folding is off). A caller embeds this text and passes
        ``text`` itself, as sent, to ``lookup`` and ``store``."""
        return self._fold(text)

    # -- lookup ------------------------------------------------------------------------------

    async def lookup(self, namespace: str, fingerprint: str, text: str,
                     vector: FloatArray | None, policy: Policy) -> Hit | None:
        """The stored answer for this request, or None. Never raises for a broken cache."""
        if self._store is None or policy == "off":
            return None
        try:
            hit = await self._exact(namespace, fingerprint, text, policy)
            if hit is None and policy == "semantic" and vector is not None and text:
                hit = await self._semantic(namespace, fingerprint, text, vector)
        except _LOOKUP_ERRORS as exc:
            log.warning("cache lookup failed, answering without it: %s", exc)
            return None
        if hit is not None:
            self._record_hit(hit.entry_id)
        return hit

    async def _exact(self, namespace: str, fingerprint: str, text: str,
                     policy: Policy) -> Hit | None:
        entry = self._table.exact(exact_key(namespace, fingerprint, text))
        kind: Literal["exact", "semantic"] = "exact"
        if entry is None and policy == "semantic":
            entry = self._table.exact(loose_key(namespace, fingerprint, text))
        if entry is None and policy == "semantic" and self.speller is not None:
            # the same text once typos are folded on either side: the same question, but not
            # the text as sent ("whats the capitol of france" / "What's the capital of France?")
            entry = self._table.typo_match(namespace, fingerprint, text, self.key_text(text))
            kind = "semantic"
        if entry is None or self._expired(entry):
            return None
        return await self._hit(entry, kind, 1.0)

    async def _semantic(self, namespace: str, fingerprint: str, text: str,
                        vector: FloatArray) -> Hit | None:
        vector = as_vector(vector)
        if (self._index is None or self._store is None or self.space is None
                or not valid_vector(vector, self.space.dim)):
            return None
        job = partial(_servable, self._store.reader, self.rule.floor, fingerprint)
        close, bodies = await self._index.search_then(namespace, vector,
                                                       self.settings.candidates, job)
        asked: Profile | None = None
        for n in close:
            entry = self._table.get(n.entry_id)
            if entry is None or entry.fingerprint != fingerprint or self._expired(entry):
                continue
            asked = asked or profile(self.key_text(text))
            verdict = self.rule.judge(self._profile(entry), asked, n.score)
            if verdict.ok:
                body = bodies.get(entry.entry_id)  # None: deleted since the search
                return None if body is None else self._make_hit(entry, "semantic",
                                                                min(n.score, 1.0), body)
            log.debug("cache candidate %d refused: %s", entry.entry_id, verdict.reason)
        return None

    def _profile(self, entry: StoredEntry) -> Profile:
        """The stored text's guard profile, kept for the most recently compared entries."""
        cached = self._profiles.get(entry.entry_id)
        if cached is None:
            text = entry.text if self.speller is None else self.speller.fold(entry.text)
            cached = self._profiles[entry.entry_id] = profile(text)
            if len(self._profiles) > _PROFILES:
                self._profiles.popitem(last=False)
        else:
            self._profiles.move_to_end(entry.entry_id)
        return cached

    async def _hit(self, entry: StoredEntry, kind: Literal["exact", "semantic"],
                   score: float) -> Hit | None:
        assert self._store is not None
        body = await self._store.reader.body(entry.entry_id)
        return None if body is None else self._make_hit(entry, kind, score, body)

    @staticmethod
    def _make_hit(entry: StoredEntry, kind: Literal["exact", "semantic"], score: float,
                  body: bytes) -> Hit:
        return Hit(entry.entry_id, kind, score, orjson.loads(body), entry.text, entry.created_at)

    def _expired(self, entry: StoredEntry) -> bool:
        return entry.expires_at is not None and entry.expires_at <= self._clock()

    def _record_hit(self, entry_id: int) -> None:
        self._table.touch(entry_id)
        _, count = self._hits.get(entry_id, (0.0, 0))
        self._hits[entry_id] = (self._clock(), count + 1)

    # -- store -------------------------------------------------------------------------------

    async def store(self, namespace: str, fingerprint: str, text: str,
                    vector: FloatArray | None, completion_body: Json, *,
                    policy: Policy = "semantic", ttl_s: float | None = None) -> bool:
        """Queue a complete answer for storing; False when it is not stored (and why is logged).

        Cheap: validation and a queue append. The writer task does the disk and graph work.
        """
        if self._store is None or policy == "off":
            return False
        reason = uncacheable(completion_body)
        body = orjson.dumps(completion_body) if reason is None else b""
        if reason is None and len(body) > self.settings.max_answer_bytes:
            reason = f"answer larger than {self.settings.max_answer_bytes} bytes"
        key = exact_key(namespace, fingerprint, text)
        if reason is None and (key in self._table or key in self._pending_keys):
            reason = "already stored"
        loose = loose_key(namespace, fingerprint, text)
        if reason is None and policy == "semantic" and (
            loose in self._table or loose in self._pending_keys
        ):
            reason = "already stored (up to case and punctuation)"
        if reason is None and len(self._pending) >= self.settings.max_pending:
            reason = "write queue full"
        if reason is not None:
            log.debug("not caching an answer: %s", reason)
            return False
        entry = self._new_entry(namespace, fingerprint, key, text, vector, body, policy, ttl_s)
        self._pending.append(entry)
        self._pending_keys.update(_keys(entry))
        self._wake.set()
        return True

    def _new_entry(self, namespace: str, fingerprint: str, key: bytes, text: str,
                   vector: FloatArray | None, body: bytes, policy: Policy,
                   ttl_s: float | None) -> NewEntry:
        now = self._clock()
        ttl = self.settings.ttl_s if ttl_s is None else ttl_s
        vector = None if vector is None else as_vector(vector)
        keep_vector = (
            policy == "semantic" and bool(text) and vector is not None and self.space is not None
            and valid_vector(vector, self.space.dim)
        )
        return NewEntry(
            namespace=namespace, fingerprint=fingerprint, exact_key=key, text=text,
            vector=vector.copy() if keep_vector and vector is not None else None,
            body=body, created_at=now, expires_at=now + ttl if ttl > 0 else None,
        )

    async def flush(self) -> int:
        """Write queued entries and hit records now; returns how many entries were written."""
        if self._store is None:
            return 0
        written = 0
        async with self._flush_lock:
            while self._pending:
                batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
                written += await self._write(batch)
            await self._write_hits()
            await self._remove(self._table.expired(self._clock()))
            excess = len(self._table) - self.settings.max_entries
            if excess > 0:
                await self._remove(self._table.least_recent(excess))
        return written

    async def _write(self, batch: list[NewEntry]) -> int:
        assert self._store is not None
        try:
            ids = await self._store.insert(batch)
        finally:
            for e in batch:
                self._pending_keys.difference_update(_keys(e))
        await self._index_new(list(zip(ids, batch, strict=True)))
        for entry_id, e in zip(ids, batch, strict=True):
            self._table.add(StoredEntry(entry_id, e.namespace, e.fingerprint, e.exact_key,
                                        e.text, e.vector is not None, e.created_at, e.expires_at))
        if self.speller is not None:
            self._table.set_typo_keys(self._remembered_keys(ids, batch))
        return len(ids)

    def _remembered_keys(self, ids: list[int], batch: list[NewEntry]
                         ) -> list[tuple[int, bytes | None]]:
        """Typo keys of new semantic entries whose fold, made by the request to embed the text,
        is still remembered; the others wait for the background task (folding a batch here
        could hold the loop ~0.1 ms per misspelt word)."""
        keys: list[tuple[int, bytes | None]] = []
        for entry_id, e in zip(ids, batch, strict=True):
            folded = self._fold.remembered(e.text)
            if e.vector is not None and folded is not None:
                keys.append((entry_id, typo_key(e.namespace, e.fingerprint, e.text, folded)))
        return keys

    async def typo_keys_made(self) -> None:
        """Wait until every entry has its typo key (a batch evaluation, a test)."""
        await self._table.all_keyed.wait()

    async def _index_new(self, written: list[tuple[int, NewEntry]]) -> None:
        if self._index is None:
            return
        by_namespace: dict[str, list[tuple[int, FloatArray]]] = {}
        for entry_id, e in written:
            if e.vector is not None:
                by_namespace.setdefault(e.namespace, []).append((entry_id, e.vector))
        for namespace, items in by_namespace.items():
            await self._index.add(namespace, [i for i, _ in items], np.stack([v for _, v in items]))

    async def _write_hits(self) -> None:
        if self._hits and self._store is not None:
            hits, self._hits = self._hits, {}
            await self._store.record_hits(hits)

    async def _remove(self, entries: list[StoredEntry]) -> None:
        """Forget entries: first in memory (no longer served), then on disk, then in the graph."""
        removed = [e for e in entries if self._table.remove(e.entry_id) is not None]
        if not removed or self._store is None:
            return
        await self._store.delete([e.entry_id for e in removed])
        await unindex(self._index, removed)

    # -- administration ----------------------------------------------------------------------

    async def invalidate(self, entry_id: int) -> bool:
        """Remove one entry; False when there is none with that id."""
        entry = self._table.get(entry_id)
        if entry is None:
            return False
        async with self._flush_lock:
            await self._remove([entry])
        return True

    async def invalidate_namespace(self, namespace: str) -> int:
        """Remove every entry of a namespace, queued ones included; returns how many."""
        if self._store is None:
            return 0
        async with self._flush_lock:
            queued = [e for e in self._pending if e.namespace == namespace]
            self._pending = [e for e in self._pending if e.namespace != namespace]
            for e in queued:
                self._pending_keys.difference_update(_keys(e))
            for entry_id in self._table.in_namespace(namespace):
                self._table.remove(entry_id)
            removed = await self._store.delete_namespace(namespace)
            if self._index is not None:
                await self._index.drop(namespace)
        return removed + len(queued)

    def stats(self) -> Json:
        return {
            "enabled": self.enabled,
            "semantic": self.semantic,
            "entries": len(self._table),
            "typo_keys": self._table.typo_key_count,
            "typo_keys_pending": self._table.unkeyed_count,
            "pending": len(self._pending),
            "namespaces": len(self._table.namespaces()),
            "threshold": self.settings.threshold,
            "threshold_source": self.settings.threshold_source,
            "rule": self.rule.name,
            "verifier_threshold": self.rule.verifier_threshold if self.rule.uses_verifier
            else None,
            "vector_space": None if self.space is None else f"{self.space.model}/{self.space.dim}",
            "index_bytes": self._index.memory_bytes() if self._index else 0,
        }

    # -- durability --------------------------------------------------------------------------

    async def save(self) -> int:
        """Write changed graphs to disk (atomically); returns how many graph files changed."""
        if self._index is None:
            return 0
        written = await self._index.save(self.settings.index_dir)
        self._last_save = self._clock()
        return written

    async def _load(self) -> None:
        assert self._store is not None
        async for entry in self._store.entries():
            self._table.add(entry)
        await self._remove(self._table.expired(self._clock()))
        if self._index is None or self.space is None:
            return
        await self._index.load(self.settings.index_dir)
        namespaces, changed = await reconcile(self._table, self._index, self._store, self.space)
        if changed:
            await self.save()
        log.info("cache open: %d entries in %d namespaces (%s)", len(self._table), namespaces,
                 describe(self.rule, self.settings))

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer: flush every ``flush_interval_s``, save every ``save_interval_s``."""
        if self._store is not None and not self._tasks:
            self._last_save = self._clock()
            self._tasks.append(asyncio.create_task(self._writer(), name="cache-writer"))
            self._peer_task = asyncio.create_task(self._peers.follow(), name="cache-peers")

    async def _writer(self) -> None:
        # Never cancelled: cancelling a batch half-way through its transaction would lose it.
        # ``close`` sets ``_stopping`` and wakes the writer, which then returns.
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.flush_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                await self.flush()
                if self._clock() - self._last_save >= self.settings.save_interval_s:
                    await self.save()
            except Exception:  # the writer must outlive any one bad batch
                log.exception("cache writer failed; the next batch will be tried")

    async def close(self) -> None:
        """Stop the writer, write what is queued, save the graphs, release everything."""
        self._stopping = True
        self._wake.set()
        for background in (self._peer_task, self._typo_task):
            if background is not None:  # only this replica's memory: safe to cut short
                await stop_task(background)
        self._peer_task = self._typo_task = None
        for task in self._tasks:
            await task
        self._tasks.clear()
        try:
            if self._store is not None:
                await self.flush()
                await self.save()
        finally:
            await self._close_resources()

    async def _close_resources(self) -> None:
        if self._index is not None:
            self._index.close()
        if self._store is not None:
            await self._store.close()


def _servable(reader: AnswerSource, floor: float, fingerprint: str,
              neighbours: list[Neighbour]) -> tuple[list[Neighbour], dict[int, bytes]]:
    """In the index pool, right after the search, so that a hit makes one thread hop: the
    neighbours that may be served, best first, and their answers."""
    close = sorted((n for n in neighbours if n.score >= floor), key=lambda n: -n.score)
    return close, reader.bodies([n.entry_id for n in close], fingerprint)


def _keys(e: NewEntry) -> tuple[bytes, ...]:
    if e.vector is None:
        return (e.exact_key,)
    return e.exact_key, loose_key(e.namespace, e.fingerprint, e.text)
