"""Tests for gateway/cache/pg_store.py and gateway/cache/peers.py: replicas sharing the cache's
entries in a real PostgreSQL, each with its own hnswlib graphs, kept in step by notices."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from embedder_worker.model import OnnxEmbedder
from gateway.cache.pg_store import PgCacheStore
from gateway.cache.semantic_cache import SemanticCache
from gateway.core.postgres import Database
from tests.cache_fixtures import CONTEXT, SPACE, answer, load_embedder, settings_in
from tests.tasks import until as until_within

pytest_plugins = ["tests.postgres_fixtures"]

NOTICE_DEADLINE_S = 30.0  # a deadline for a loaded machine, not a measurement
until = functools.partial(until_within, timeout_s=NOTICE_DEADLINE_S)
STORED, ASKED = "How do I reset my password?", "How can I reset my password?"


@pytest.fixture(scope="module")
def embedder() -> OnnxEmbedder:
    return load_embedder()


class Replicas:
    """Caches on one database, as replicas would open them; each with its own index folder."""

    def __init__(self, database: Database, folder: Path) -> None:
        self.database = database
        self.folder = folder
        self.opened: list[SemanticCache] = []
        self.stores: dict[str, PgCacheStore] = {}

    async def __call__(self, name: str) -> SemanticCache:
        store = self.stores[name] = await PgCacheStore.open(self.database)
        cache = await SemanticCache.open(settings_in(self.folder / name, threshold=0.9), SPACE,
                                         store=store)
        cache.start()
        self.opened.append(cache)
        return cache


@pytest.fixture
async def replicas(database: Database, tmp_path: Path) -> AsyncIterator[Replicas]:
    fleet = Replicas(database, tmp_path)
    yield fleet
    for cache in fleet.opened:
        await cache.close()


async def test_an_answer_stored_through_one_replica_is_a_semantic_hit_through_another(
    replicas: Replicas, embedder: OnnxEmbedder,
) -> None:
    a, b = await replicas("a"), await replicas("b")
    vectors = embedder.embed([STORED, ASKED])
    assert await a.lookup("t", CONTEXT, ASKED, vectors[1], "semantic") is None
    assert await a.store("t", CONTEXT, STORED, vectors[0], answer("Click 'forgot'."))
    await a.flush()
    await until(lambda: b.stats()["entries"] == 1, "B sees A's entry")
    hit = await b.lookup("t", CONTEXT, ASKED, vectors[1], "semantic")
    assert hit is not None and hit.kind == "semantic" and hit.text == STORED
    assert hit.body["choices"][0]["message"]["content"] == "Click 'forgot'."
    exact = await b.lookup("t", CONTEXT, STORED, None, "exact")
    assert exact is not None and exact.entry_id == hit.entry_id


async def test_removals_and_dropped_namespaces_reach_the_other_replicas(
    replicas: Replicas, embedder: OnnxEmbedder,
) -> None:
    a, b = await replicas("a"), await replicas("b")
    vectors = embedder.embed(["What is 2+2?", "Name a prime", "Spell cat"])
    await a.store("t", CONTEXT, "What is 2+2?", vectors[0], answer("4"))
    await a.store("t", CONTEXT, "Name a prime", vectors[1], answer("7"))
    await a.store("u", CONTEXT, "Spell cat", vectors[2], answer("c-a-t"))
    await a.flush()
    await until(lambda: b.stats()["entries"] == 3, "B sees three entries")
    hit = await b.lookup("t", CONTEXT, "What is 2+2?", None, "exact")
    assert hit is not None
    assert await a.invalidate(hit.entry_id)
    await until(lambda: b.stats()["entries"] == 2, "B forgets the removed entry")
    assert await b.lookup("t", CONTEXT, "What is 2+2?", vectors[0], "semantic") is None
    assert await b.invalidate_namespace("u") == 1
    await until(lambda: a.stats()["entries"] == 1, "A drops namespace u")
    assert await a.lookup("u", CONTEXT, "Spell cat", vectors[2], "semantic") is None
    assert await a.lookup("t", CONTEXT, "Name a prime", vectors[1], "semantic") is not None


async def test_a_replica_started_later_rebuilds_its_graph_from_the_database(
    replicas: Replicas, embedder: OnnxEmbedder,
) -> None:
    a = await replicas("a")
    vectors = embedder.embed([STORED, ASKED])
    await a.store("t", CONTEXT, STORED, vectors[0], answer("Click 'forgot'."))
    await a.flush()
    late = await replicas("late")  # no graph on its disk: built from PostgreSQL's rows
    hit = await late.lookup("t", CONTEXT, ASKED, vectors[1], "semantic")
    assert hit is not None and hit.kind == "semantic"


async def test_ids_are_shared_so_both_replicas_count_the_same_entries(
    replicas: Replicas, database: Database,
) -> None:
    a, b = await replicas("a"), await replicas("b")
    await a.store("t", CONTEXT, "one", None, answer("1"))
    await b.store("t", CONTEXT, "two", None, answer("2"))
    await asyncio.gather(a.flush(), b.flush())
    await until(lambda: a.stats()["entries"] == b.stats()["entries"] == 2, "both see two")
    assert await database.scalar("SELECT count(*) FROM cache_entries") == 2
    one = await b.lookup("t", CONTEXT, "one", None, "exact")
    two = await a.lookup("t", CONTEXT, "two", None, "exact")
    assert one is not None and two is not None and one.entry_id != two.entry_id


async def test_a_replica_whose_listener_dropped_listens_again_and_catches_up(
    replicas: Replicas, database: Database,
) -> None:
    a, b = await replicas("a"), await replicas("b")
    await a.store("t", CONTEXT, "old question", None, answer("old"))
    await a.flush()
    await until(lambda: b.stats()["entries"] == 1, "B sees the first entry")
    await database.pool.execute(  # what a database restart does to every LISTEN connection
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()"
    )
    old = await a.lookup("t", CONTEXT, "old question", None, "exact")
    assert old is not None and await a.invalidate(old.entry_id)
    await a.store("t", CONTEXT, "new question", None, answer("new"))
    await a.flush()
    await until(lambda: replicas.stores["b"].reconnects == 1, "B listens again")
    await until(lambda: b.lookup("t", CONTEXT, "new question", None, "exact"),
                "B caught up with the entry it missed")
    await until(lambda: b.stats()["entries"] == 1, "B forgot the entry removed meanwhile")
    assert await b.lookup("t", CONTEXT, "old question", None, "exact") is None
    new = await b.lookup("t", CONTEXT, "new question", None, "exact")
    assert new is not None and new.body["choices"][0]["message"]["content"] == "new"


async def test_a_typo_stored_through_one_replica_meets_its_correction_through_another(
    replicas: Replicas, embedder: OnnxEmbedder,
) -> None:
    a, b = await replicas("a"), await replicas("b")
    typo, corrected = "how do I reset my pasword", "How do I reset my password?"
    await a.store("t", CONTEXT, typo, embedder.embed([a.key_text(typo)])[0], answer("Click."))
    await a.flush()
    # B adopts the entry from the notice and makes its typo key in the background
    await until(lambda: b.stats()["entries"] == 1 and b.stats()["typo_keys"] == 1,
                "B keys A's entry by its folded text")
    hit = await b.lookup("t", CONTEXT, corrected, None, "semantic")
    assert hit is not None and (hit.kind, hit.text) == ("semantic", typo)
