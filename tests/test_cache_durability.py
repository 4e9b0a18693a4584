"""gateway/cache/semantic_cache.py and index.py on disk: reopening, rebuilding the hnswlib graphs
from SQLite when they are missing, torn or made for another model, catching up on entries newer
than the saved graph, and surviving a SIGKILL in the middle of writing."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.cache.index import META_FILE, VectorSpace
from gateway.cache.semantic_cache import SemanticCache
from tests.cache_fixtures import CONTEXT, ROOT, answer, open_cache, unit_vectors

VECTORS = unit_vectors(60, seed=11)


async def _fill(cache: SemanticCache, ids: range, namespace: str = "tenant:a") -> None:
    for i in ids:
        await cache.store(namespace, CONTEXT, f"question {i}", VECTORS[i], answer(f"answer {i}"))
    await cache.flush()


async def _semantic_hits(cache: SemanticCache, ids: range, namespace: str = "tenant:a") -> int:
    hits = 0
    for i in ids:
        hit = await cache.lookup(namespace, CONTEXT, f"asked {i}", VECTORS[i], "semantic")
        hits += hit is not None and hit.body["choices"][0]["message"]["content"] == f"answer {i}"
    return hits


async def test_reopened_cache_serves_everything_from_the_saved_graph(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = await open_cache(tmp_path, guards=False)
    await _fill(cache, range(20))
    await cache.close()
    assert (tmp_path / "index" / META_FILE).exists()
    with caplog.at_level(logging.INFO, logger="gateway.cache"):
        reopened = await open_cache(tmp_path, guards=False)
    try:
        assert await _semantic_hits(reopened, range(20)) == 20
        assert "rebuilt" not in caplog.text
    finally:
        await reopened.close()


@pytest.mark.parametrize("damage", ["delete the folder", "tear a graph file", "garble the header"])
async def test_missing_or_corrupt_graph_is_rebuilt_from_sqlite(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    cache = await open_cache(tmp_path, guards=False)
    await _fill(cache, range(30))
    await cache.close()
    index_dir = tmp_path / "index"
    if damage == "delete the folder":
        shutil.rmtree(index_dir)
    elif damage == "tear a graph file":
        graph = next(index_dir.glob("ns-*.hnsw"))
        graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    else:
        (index_dir / META_FILE).write_text("{not json", "utf-8")
    with caplog.at_level(logging.INFO, logger="gateway.cache"):
        reopened = await open_cache(tmp_path, guards=False)
    try:
        assert "rebuilt from the database" in caplog.text
        assert await _semantic_hits(reopened, range(30)) == 30
    finally:
        await reopened.close()


async def test_vectors_of_another_model_are_dropped_and_exact_hits_remain(tmp_path: Path) -> None:
    cache = await open_cache(tmp_path, guards=False)
    await _fill(cache, range(5))
    await cache.close()
    other = VectorSpace("another-model", 384)
    reopened = await open_cache(tmp_path, space=other, guards=False)
    try:
        assert await _semantic_hits(reopened, range(5)) == 0
        assert await reopened.lookup("tenant:a", CONTEXT, "question 3", None, "semantic")
        assert reopened.stats()["vector_space"] == "another-model/384"
    finally:
        await reopened.close()


async def test_graph_older_than_the_database_catches_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = await open_cache(tmp_path, guards=False)
    await _fill(cache, range(20))
    await cache.save()
    saved = tmp_path / "saved-index"
    shutil.copytree(tmp_path / "index", saved)
    await _fill(cache, range(20, 30))
    first = await cache.lookup("tenant:a", CONTEXT, "question 0", None, "exact")
    assert first is not None and await cache.invalidate(first.entry_id)
    await cache.close()
    shutil.rmtree(tmp_path / "index")
    shutil.copytree(saved, tmp_path / "index")
    with caplog.at_level(logging.INFO, logger="gateway.cache"):
        reopened = await open_cache(tmp_path, guards=False)
    try:
        assert "10 entries added, 1 removed" in caplog.text
        assert await _semantic_hits(reopened, range(1, 30)) == 29
        assert await _semantic_hits(reopened, range(0, 1)) == 0
    finally:
        await reopened.close()


_CHILD = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from tests.cache_fixtures import CONTEXT, answer, open_cache, unit_vectors

    async def main(directory: Path) -> None:
        cache = await open_cache(directory, guards=False, save_interval_s=0.001)
        vectors = unit_vectors(5000, seed=7)
        batch = 0
        while True:
            for i in range(batch * 50, batch * 50 + 50):
                await cache.store("tenant:a", CONTEXT, f"question {i}", vectors[i],
                                  answer(f"answer {i}"))
            await cache.flush()
            await cache.save()
            print(f"batch {batch}", flush=True)
            batch += 1

    asyncio.run(main(Path(sys.argv[1])))
""")


async def test_sigkill_while_writing_leaves_a_cache_that_reopens_intact(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(_CHILD, "utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen([sys.executable, str(script), str(tmp_path / "cache")],
                          stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT) as child:
        assert child.stdout is not None
        for _ in range(4):  # four batches committed and saved, the fifth under way
            assert child.stdout.readline().startswith("batch")
        child.send_signal(signal.SIGKILL)
        child.wait()
    with sqlite3.connect(tmp_path / "cache" / "cache.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    assert stored >= 200
    reopened = await open_cache(tmp_path / "cache", guards=False)
    try:
        vectors = unit_vectors(5000, seed=7)
        assert reopened.stats()["entries"] == stored
        for i in range(stored):
            hit = await reopened.lookup("tenant:a", CONTEXT, f"asked {i}", vectors[i], "semantic")
            assert hit is not None and hit.body["choices"][0]["message"]["content"] == f"answer {i}"
    finally:
        await reopened.close()
