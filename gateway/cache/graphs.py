"""Bringing the saved hnswlib graphs in line with the database as the cache opens.

A graph file is saved every ``save_interval_s``, the database on every batch, so a graph loaded at
start-up may lack the newest entries or still hold removed ones (or be missing altogether). For
each namespace with vectors in the entry table, ``reconcile`` adds the missing vectors (read back
from the database), removes the stale labels, or rebuilds the graph from every stored vector when
there is no graph; graphs of namespaces with no entry left are dropped. The caller saves the
graphs when anything changed.

Touches the graphs it is given and reads vectors from the store; writes nothing to disk itself.
"""

from __future__ import annotations

import logging

import numpy as np

from gateway.cache.backend import CacheBackend
from gateway.cache.entries import EntryTable
from gateway.cache.index import FloatArray, IndexSet, VectorSpace

log = logging.getLogger(__name__)


async def reconcile(table: EntryTable, index: IndexSet, store: CacheBackend,
                    space: VectorSpace) -> tuple[int, bool]:
    """Bring every graph in line with ``table``: how many namespaces hold vectors, and whether
    any graph changed (then the caller saves them)."""
    changed = False
    wanted = _vector_ids(table)
    for namespace in set(index.namespaces()) - set(wanted):
        await index.drop(namespace)
        changed = True
    for namespace, ids in wanted.items():
        changed = await _reconcile(index, store, space, namespace, ids) or changed
    return len(wanted), changed


def _vector_ids(table: EntryTable) -> dict[str, set[int]]:
    wanted: dict[str, set[int]] = {}
    for namespace in table.namespaces():
        ids = {i for i in table.in_namespace(namespace)
               if (e := table.get(i)) is not None and e.has_vector}
        if ids:
            wanted[namespace] = ids
    return wanted


async def _reconcile(index: IndexSet, store: CacheBackend, space: VectorSpace, namespace: str,
                     ids: set[int]) -> bool:
    """Bring a namespace's graph in line with the database; True when it had to change."""
    if namespace not in index.namespaces():
        await _rebuild(index, store, space, namespace)
        return True
    labels = await index.labels(namespace)
    missing, stale = sorted(ids - labels), sorted(labels - ids)
    if missing:
        found, vectors = await store.vectors_by_id(missing, space.dim)
        await index.add(namespace, found, vectors)
    if stale:
        await index.remove(namespace, stale)
    await index.set_live(namespace, len(ids))
    if missing or stale:
        log.info("cache graph %s: %d entries added, %d removed since it was saved",
                 namespace, len(missing), len(stale))
    return bool(missing or stale)


async def _rebuild(index: IndexSet, store: CacheBackend, space: VectorSpace,
                   namespace: str) -> None:
    ids: list[int] = []
    parts: list[FloatArray] = []
    async for batch_ids, vectors in store.vectors(namespace, space.dim):
        ids.extend(batch_ids)
        parts.append(vectors)
    matrix = np.concatenate(parts) if parts else np.empty((0, space.dim), np.float32)
    await index.install(namespace, await index.build(ids, matrix))
    log.info("cache graph %s rebuilt from the database (%d vectors)", namespace, len(ids))
