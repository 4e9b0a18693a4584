"""The vector side of the cache: one hnswlib graph (cosine space) per namespace, behind one lock.

hnswlib must not search while it inserts, so every graph is reached through ``IndexSet`` and its
``ReadWriteLock``: searches share the lock, inserts, deletions, resizes and swaps take it alone,
and each call runs in a small thread pool (hnswlib releases the GIL) so the event loop never waits
on the graph. A graph is built or rebuilt off to the side and swapped in whole, so a search never
sees a half-built one. Graphs grow by doubling (``resize_index``) and reuse the slots of deleted
entries (``allow_replace_deleted``).

On disk (``save``/``load``): one file per namespace plus ``meta.json`` (format, model, dim, space,
parameters, each file's size and CRC-32, each namespace's entry count and last id). Every file is
written to a temporary name and moved into place with ``os.replace``, the header last, so a kill at
any moment leaves either the old or the new file, never a torn one. ``load`` refuses (returns no
graph for) a namespace whose file is missing, torn, or built for another model, dimension or
parameters; the caller then rebuilds it from SQLite. Touches only ``index_dir``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import zlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import hnswlib
import numpy as np
import numpy.typing as npt

from gateway.core.cache_settings import IndexParams

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
T = TypeVar("T")
META_FILE = "meta.json"
FORMAT = 1
_INITIAL_CAPACITY = 16
_CRC_BLOCK = 1 << 20
_BUILD_THREADS = 2  # a rebuild happens at start-up, before requests: use both cores


@dataclass(frozen=True, slots=True)
class VectorSpace:
    """Which embeddings the vectors are: a graph built for another space is not reused."""

    model: str
    dim: int


@dataclass(frozen=True, slots=True)
class Neighbour:
    entry_id: int
    score: float  # cosine similarity


class ReadWriteLock:
    """Many readers or one writer; a waiting writer holds back new readers (no starvation).

    Used on the event loop only. Taking a free read side and releasing either side never
    suspends (``try_read``, ``release_read``), so a search can take the lock and hand its job
    to a thread in one step, and the thread's completion can release it.
    """

    def __init__(self) -> None:
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._waiting: list[asyncio.Future[None]] = []

    @property
    def readers(self) -> int:
        return self._readers

    @property
    def writers_waiting(self) -> int:
        return self._writers_waiting

    def try_read(self) -> bool:
        """Take the read side if no writer holds or waits for the lock."""
        if self._writer or self._writers_waiting:
            return False
        self._readers += 1
        return True

    def release_read(self) -> None:
        self._readers -= 1
        self._wake()

    async def acquire_read(self) -> None:
        while not self.try_read():
            await self._changed()

    @asynccontextmanager
    async def reading(self) -> Any:
        await self.acquire_read()
        try:
            yield
        finally:
            self.release_read()

    @asynccontextmanager
    async def writing(self) -> Any:
        self._writers_waiting += 1
        try:
            while self._writer or self._readers:
                await self._changed()
        except BaseException:
            self._writers_waiting -= 1
            self._wake()  # readers held back for this writer may go on
            raise
        self._writers_waiting -= 1
        self._writer = True
        try:
            yield
        finally:
            self._writer = False
            self._wake()

    async def _changed(self) -> None:
        """Wait for the next release; every waiter then checks its own condition again."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiting:
                self._waiting.remove(waiter)

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if not waiter.done():
                waiter.set_result(None)


class Graph:
    """One namespace's hnswlib index with its live-entry count; used only under the lock."""

    def __init__(self, index: Any, live: int, last_id: int) -> None:
        self.index = index
        self.live = live
        self.last_id = last_id
        self.dirty = False

    @classmethod
    def empty(cls, space: VectorSpace, params: IndexParams, capacity: int) -> Graph:
        index = hnswlib.Index(space="cosine", dim=space.dim)
        index.init_index(
            max_elements=max(capacity, _INITIAL_CAPACITY), ef_construction=params.ef_construction,
            M=params.m, allow_replace_deleted=True,
        )
        index.set_ef(params.ef_search)
        index.set_num_threads(1)
        return cls(index, 0, 0)

    def add(self, ids: Sequence[int], vectors: FloatArray, threads: int = 1) -> None:
        needed = self.index.get_current_count() + len(ids)
        capacity = self.index.get_max_elements()
        if needed > capacity:
            self.index.resize_index(max(needed, capacity * 2))
        self.index.add_items(vectors, np.asarray(ids, dtype=np.int64), num_threads=threads,
                             replace_deleted=True)
        self.live += len(ids)
        self.last_id = max(self.last_id, *ids)
        self.dirty = True

    def remove(self, ids: Sequence[int]) -> None:
        for entry_id in ids:
            try:
                self.index.mark_deleted(entry_id)
            except RuntimeError:
                continue  # not in this graph, or already deleted
            self.live -= 1
            self.dirty = True

    def search(self, vector: FloatArray, k: int) -> list[Neighbour]:
        k = min(k, self.live)
        while k > 0:
            try:
                labels, distances = self.index.knn_query(vector, k=k)
            except RuntimeError:  # fewer reachable live entries than k
                k //= 2
                continue
            return [
                Neighbour(int(label), 1.0 - float(distance))
                for label, distance in zip(labels[0], distances[0], strict=True)
            ]
        return []


class IndexSet:
    """Every namespace's graph, the lock that guards them, and the threads that run them."""

    def __init__(self, space: VectorSpace, params: IndexParams) -> None:
        self.space = space
        self.params = params
        self.lock = ReadWriteLock()
        self._graphs: dict[str, Graph] = {}
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cache-index")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def namespaces(self) -> list[str]:
        return list(self._graphs)

    def live(self, namespace: str) -> int:
        graph = self._graphs.get(namespace)
        return graph.live if graph else 0

    async def search(self, namespace: str, vector: FloatArray, k: int) -> list[Neighbour]:
        return await self.search_then(namespace, vector, k, _same)

    def search_then(self, namespace: str, vector: FloatArray, k: int,
                    then: Callable[[list[Neighbour]], T]) -> Awaitable[T]:
        """Search, then call ``then`` on the neighbours, in one pool job under the read lock.

        ``then`` runs in the pool thread (it must be thread-safe; the graph is not its to
        touch) and its result is what the awaitable gives; for a namespace without entries
        it runs at once, here, on no neighbours. When no writer holds or waits for
        the lock the job is submitted before this returns, so the caller can work on the loop
        while it runs; otherwise it is submitted once the lock is free, when awaited. Either
        way the awaitable must be awaited.
        """
        graph = self._graphs.get(namespace)
        if graph is None or graph.live == 0:
            done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
            done.set_result(then([]))
            return done
        if self.lock.try_read():
            return self._submit_read(_search_then, graph, vector, k, then)
        return self._search_later(namespace, vector, k, then)

    async def _search_later(self, namespace: str, vector: FloatArray, k: int,
                            then: Callable[[list[Neighbour]], T]) -> T:
        await self.lock.acquire_read()
        graph = self._graphs.get(namespace)  # the writer may have swapped or dropped it
        if graph is None or graph.live == 0:
            self.lock.release_read()
            return then([])
        return await self._submit_read(_search_then, graph, vector, k, then)

    def _submit_read(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``fn`` in the pool holding the read side, taken by the caller.

        The lock is released when the job ends, not when its awaiter does: a cancelled lookup
        must not let a writer in while its search still runs in the pool.
        """
        loop = asyncio.get_running_loop()
        try:
            job = self._pool.submit(fn, *args)
        except BaseException:
            self.lock.release_read()
            raise
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self.lock.release_read))
        return asyncio.wrap_future(job, loop=loop)

    async def add(self, namespace: str, ids: Sequence[int], vectors: FloatArray) -> None:
        if not ids:
            return
        async with self.lock.writing():
            graph = self._graphs.get(namespace)
            if graph is None:
                graph = self._graphs[namespace] = Graph.empty(self.space, self.params, len(ids))
            await self._run(graph.add, ids, vectors)

    async def remove(self, namespace: str, ids: Sequence[int]) -> None:
        graph = self._graphs.get(namespace)
        if graph is None or not ids:
            return
        async with self.lock.writing():
            await self._run(graph.remove, ids)

    async def drop(self, namespace: str) -> None:
        """Forget a namespace's graph and its file (everything in it was invalidated)."""
        async with self.lock.writing():
            self._graphs.pop(namespace, None)

    async def install(self, namespace: str, graph: Graph) -> None:
        """Swap in a graph built off to the side."""
        async with self.lock.writing():
            self._graphs[namespace] = graph

    async def build(self, ids: Sequence[int], vectors: FloatArray) -> Graph:
        """A new graph over ``vectors``, built in the pool without the lock (nobody sees it)."""
        graph = Graph.empty(self.space, self.params, len(ids))
        if ids:
            await self._run(graph.add, ids, vectors, _BUILD_THREADS)
        return graph

    async def save(self, index_dir: Path) -> int:
        """Write changed graphs and the header; returns how many graph files were written."""
        await self.lock.acquire_read()
        return await self._submit_read(self._save_all, index_dir)

    def _save_all(self, index_dir: Path) -> int:
        index_dir.mkdir(parents=True, exist_ok=True)
        old = _read_meta(index_dir)
        entries: dict[str, Any] = {}
        written = 0
        for namespace, graph in self._graphs.items():
            name = graph_file(namespace)
            previous = old.get("namespaces", {}).get(namespace) if old else None
            if graph.dirty or previous is None or not (index_dir / name).exists():
                _atomic_save(graph.index, index_dir / name)
                graph.dirty = False
                written += 1
                previous = None
            entries[namespace] = previous or {
                "file": name, "live": graph.live, "last_id": graph.last_id,
                **_checksum(index_dir / name),
            }
        _atomic_write(index_dir / META_FILE, json.dumps(self._header(entries)).encode())
        _remove_stale(index_dir, {e["file"] for e in entries.values()})
        return written

    def _header(self, entries: dict[str, Any]) -> dict[str, Any]:
        return {
            "format": FORMAT, "model": self.space.model, "dim": self.space.dim, "space": "cosine",
            "m": self.params.m, "ef_construction": self.params.ef_construction,
            "entries": sum(e["live"] for e in entries.values()),
            "last_id": max((e["last_id"] for e in entries.values()), default=0),
            "namespaces": entries,
        }

    async def load(self, index_dir: Path) -> dict[str, int]:
        """Load every usable graph file; returns each loaded namespace's saved last id."""
        loaded = await self._run(self._load_all, index_dir)
        async with self.lock.writing():
            self._graphs.update({ns: graph for ns, graph in loaded.items()})
        return {ns: graph.last_id for ns, graph in loaded.items()}

    def _load_all(self, index_dir: Path) -> dict[str, Graph]:
        meta = _read_meta(index_dir)
        if meta is None or not self._compatible(meta):
            if meta is not None:
                log.warning("cache index in %s was built for another model or parameters; "
                            "rebuilding from the database", index_dir)
            return {}
        graphs = {}
        for namespace, entry in meta.get("namespaces", {}).items():
            graph = self._load_one(index_dir, entry)
            if graph is not None:
                graphs[namespace] = graph
        return graphs

    def _compatible(self, meta: dict[str, Any]) -> bool:
        return bool(
            meta.get("format") == FORMAT and meta.get("model") == self.space.model
            and meta.get("dim") == self.space.dim and meta.get("space") == "cosine"
            and meta.get("m") == self.params.m
        )

    def _load_one(self, index_dir: Path, entry: dict[str, Any]) -> Graph | None:
        path = index_dir / str(entry.get("file", ""))
        try:
            if _checksum(path) != {"size": entry.get("size"), "crc32": entry.get("crc32")}:
                log.warning("cache index file %s is missing or torn; rebuilding it", path)
                return None
            index = hnswlib.Index(space="cosine", dim=self.space.dim)
            index.load_index(str(path), allow_replace_deleted=True)
        except (OSError, RuntimeError, ValueError) as exc:
            log.warning("cache index file %s cannot be loaded (%s); rebuilding it", path, exc)
            return None
        index.set_ef(self.params.ef_search)
        index.set_num_threads(1)
        return Graph(index, int(entry.get("live", 0)), int(entry.get("last_id", 0)))

    async def labels(self, namespace: str) -> set[int]:
        """Every id a graph holds (deleted ones included), for reconciling with the database."""
        graph = self._graphs.get(namespace)
        if graph is None:
            return set()
        await self.lock.acquire_read()
        ids = await self._submit_read(graph.index.get_ids_list)
        return {int(i) for i in ids}

    async def set_live(self, namespace: str, live: int) -> None:
        graph = self._graphs.get(namespace)
        if graph is not None:
            graph.live = live

    def memory_bytes(self) -> int:
        """Roughly what the graphs hold: vectors, links and labels of every allocated slot."""
        per_slot = self.space.dim * 4 + self.params.m * 2 * 4 + 4 + 8 + 2
        return sum(g.index.get_max_elements() * per_slot for g in self._graphs.values())


def _same(neighbours: list[Neighbour]) -> list[Neighbour]:
    return neighbours


def _search_then(graph: Graph, vector: FloatArray, k: int,
                 then: Callable[[list[Neighbour]], T]) -> T:
    return then(graph.search(vector, k))


def graph_file(namespace: str) -> str:
    return "ns-" + hashlib.sha256(namespace.encode()).hexdigest()[:24] + ".hnsw"


def _atomic_save(index: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    index.save_index(str(tmp))
    _fsync(tmp)
    os.replace(tmp, path)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _checksum(path: Path) -> dict[str, int]:
    crc = 0
    size = 0
    with open(path, "rb") as f:
        for block in _blocks(f):
            crc = zlib.crc32(block, crc)
            size += len(block)
    return {"size": size, "crc32": crc}


def _blocks(f: Any) -> Iterator[bytes]:
    while block := f.read(_CRC_BLOCK):
        yield cast(bytes, block)


def _read_meta(index_dir: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((index_dir / META_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _remove_stale(index_dir: Path, keep: set[str]) -> None:
    for path in index_dir.glob("ns-*.hnsw*"):
        if path.name not in keep:
            path.unlink(missing_ok=True)


def as_vector(vector: FloatArray | Sequence[float]) -> FloatArray:
    """One float32 row, whatever array or list shape the embedder client handed over."""
    return np.asarray(vector, dtype=np.float32).reshape(-1)


def valid_vector(vector: FloatArray, dim: int) -> bool:
    """Whether ``vector`` fits a graph of ``dim`` dimensions and holds only finite numbers."""
    return bool(vector.size == dim and np.isfinite(vector).all())
