"""gateway/cache/index.py: the readers/writer lock, growing graphs, deletions, save and load,
and a search's pool job (submitted at once, holding the lock until it ends)."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

from gateway.cache.index import META_FILE, IndexSet, Neighbour, ReadWriteLock
from gateway.core.cache_settings import IndexParams
from tests.cache_fixtures import SPACE, unit_vectors
from tests.tasks import started


async def test_readers_share_and_a_writer_waits_for_them() -> None:
    lock = ReadWriteLock()
    order: list[str] = []
    release = asyncio.Event()
    both_in = asyncio.Event()

    async def reader(name: str) -> None:
        async with lock.reading():
            order.append(f"{name} in")
            if len(order) == 2:
                both_in.set()
            await release.wait()
            order.append(f"{name} out")

    async def writer() -> None:
        async with lock.writing():
            order.append("writer")

    readers = [asyncio.create_task(reader(n)) for n in ("r1", "r2")]
    await both_in.wait()
    writing, late = await started([writer(), reader("r3")])
    assert lock.writers_waiting == 1 and lock.readers == 2
    assert order == ["r1 in", "r2 in"]  # the writer waits, and holds back the late reader
    release.set()
    await asyncio.gather(*readers, writing, late)
    assert order.index("writer") < order.index("r3 in")
    assert order.index("writer") > order.index("r2 out")


async def test_graph_grows_past_its_first_capacity_and_forgets_deleted_entries(
    tmp_path: Path,
) -> None:
    index = IndexSet(SPACE, IndexParams())
    vectors = unit_vectors(300, seed=1)
    try:
        for start in range(0, 300, 100):
            await index.add("ns", list(range(start + 1, start + 101)), vectors[start:start + 100])
        assert index.live("ns") == 300
        nearest = await index.search("ns", vectors[41], 3)
        assert nearest[0].entry_id == 42 and nearest[0].score > 0.999
        await index.remove("ns", [42, 42, 999])
        assert index.live("ns") == 299
        assert all(n.entry_id != 42 for n in await index.search("ns", vectors[41], 10))
        assert await index.search("empty", vectors[0], 3) == []
    finally:
        index.close()


async def test_saved_graphs_load_back_and_record_their_header(tmp_path: Path) -> None:
    index = IndexSet(SPACE, IndexParams())
    vectors = unit_vectors(20, seed=2)
    await index.add("a", list(range(1, 11)), vectors[:10])
    await index.add("b", list(range(11, 21)), vectors[10:])
    assert await index.save(tmp_path) == 2
    assert await index.save(tmp_path) == 0  # nothing changed since
    index.close()
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert (meta["model"], meta["dim"], meta["entries"], meta["last_id"]) == (
        SPACE.model, 384, 20, 20)
    loaded = IndexSet(SPACE, IndexParams())
    try:
        assert await loaded.load(tmp_path) == {"a": 10, "b": 20}
        assert (await loaded.search("b", vectors[14], 1))[0].entry_id == 15
        assert await loaded.labels("a") == set(range(1, 11))
    finally:
        loaded.close()


async def test_graphs_of_other_parameters_are_not_loaded(tmp_path: Path) -> None:
    index = IndexSet(SPACE, IndexParams())
    await index.add("a", [1], unit_vectors(1))
    await index.save(tmp_path)
    index.close()
    other = IndexSet(SPACE, IndexParams(m=32))
    try:
        assert await other.load(tmp_path) == {}
    finally:
        other.close()


async def test_a_search_is_submitted_at_once_and_its_result_comes_through_then() -> None:
    index = IndexSet(SPACE, IndexParams())
    vectors = unit_vectors(20, seed=4)
    ran = threading.Event()

    def then(neighbours: list[Neighbour]) -> int:
        ran.set()
        return neighbours[0].entry_id

    try:
        await index.add("ns", list(range(1, 21)), vectors)
        pending = index.search_then("ns", vectors[6], 3, then)
        assert ran.wait(timeout=30)  # ran in the pool before anyone awaited it
        assert await pending == 7
    finally:
        index.close()


async def test_a_search_waits_for_a_waiting_writer_and_then_runs() -> None:
    index = IndexSet(SPACE, IndexParams())
    vectors = unit_vectors(20, seed=5)
    try:
        await index.add("ns", list(range(1, 11)), vectors[:10])
        async with index.lock.writing():
            pending = index.search_then("ns", vectors[14], 1, lambda found: found)
            await index._run(index._graphs["ns"].add, list(range(11, 21)), vectors[10:])
        assert [n.entry_id for n in await pending] == [15]  # sees the writer's whole batch
    finally:
        index.close()


async def test_a_cancelled_search_keeps_writers_out_until_its_job_ends() -> None:
    index = IndexSet(SPACE, IndexParams())
    vectors = unit_vectors(20, seed=6)
    inside, release = threading.Event(), threading.Event()

    def then(neighbours: list[Neighbour]) -> list[Neighbour]:
        inside.set()
        release.wait(timeout=30)
        return neighbours

    async def search() -> list[Neighbour]:
        return await index.search_then("ns", vectors[0], 3, then)

    try:
        await index.add("ns", list(range(1, 11)), vectors[:10])
        searching = asyncio.create_task(search())
        assert await asyncio.to_thread(inside.wait, 30)
        searching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await searching
        assert index.lock.readers == 1  # the job still holds the read side
        (adding,) = await started([index.add("ns", list(range(11, 21)), vectors[10:])])
        assert index.lock.writers_waiting == 1  # the add waits for the job, not for its turn
        assert not adding.done() and index.live("ns") == 10  # the pool still searches
        release.set()
        await adding
        assert index.live("ns") == 20
    finally:
        release.set()
        index.close()
