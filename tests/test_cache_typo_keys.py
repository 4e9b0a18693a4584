"""gateway/cache/typo_keys.py: a stored text's typo key, made at once for the cache's own writes
and in a thread for the rows it opens with; gone with its entry. Real SQLite, real hnswlib
graphs, the real word lists; vectors are left out where only the typo step is under test."""

from __future__ import annotations

from pathlib import Path

from gateway.cache.entries import EntryTable
from gateway.cache.fingerprint import exact_key, loose_key
from gateway.cache.spelling import load
from gateway.cache.store import StoredEntry
from gateway.cache.typo_keys import typo_key
from tests.cache_fixtures import CONTEXT, FakeClock, answer, open_cache, unit_vectors

TYPO = "how many calroies are in an avocado"
ASKED = "How many calories are in an avocado?"


def test_a_text_folding_leaves_alone_has_no_typo_key() -> None:
    fold = load().fold
    assert typo_key("ns", CONTEXT, ASKED, fold(ASKED)) is None
    assert typo_key("ns", CONTEXT, TYPO, fold(TYPO)) == loose_key("ns", CONTEXT, ASKED)


async def test_an_opened_cache_keys_its_stored_typos_in_the_background(tmp_path: Path) -> None:
    cache = await open_cache(tmp_path)
    await cache.store("tenant:a", CONTEXT, TYPO, unit_vectors(1)[0], answer("About 240."))
    await cache.flush()
    await cache.close()
    reopened = await open_cache(tmp_path)
    try:
        # open has returned without folding a single stored text
        assert reopened.stats()["typo_keys_pending"] == 1
        await reopened.typo_keys_made()
        hit = await reopened.lookup("tenant:a", CONTEXT, ASKED, None, "semantic")
        assert hit is not None and (hit.kind, hit.text) == ("semantic", TYPO)
    finally:
        await reopened.close()


async def test_typo_keys_leave_with_evicted_and_expired_entries(tmp_path: Path) -> None:
    clock = FakeClock()
    cache = await open_cache(tmp_path, clock=clock, max_entries=2)
    vectors = unit_vectors(3)
    try:
        for text in (TYPO, "how to fix a leaky fauset"):
            cache.key_text(text)  # as the request folds it to embed it: the fold is remembered
        await cache.store("tenant:a", CONTEXT, TYPO, vectors[0], answer(), ttl_s=10)
        await cache.store("tenant:a", CONTEXT, "how to fix a leaky fauset", vectors[1], answer(),
                          ttl_s=1000)
        await cache.flush()
        assert cache.stats()["typo_keys"] == 2
        clock.now += 11  # the avocado expires
        await cache.flush()
        assert cache.stats()["typo_keys"] == 1
        assert await cache.lookup("tenant:a", CONTEXT, ASKED, None, "semantic") is None
        for n, text in enumerate(("whats the capitol of france", "is it rainning in paris")):
            cache.key_text(text)
            await cache.store("tenant:a", CONTEXT, text, vectors[2 - n], answer(), ttl_s=1000)
            await cache.flush()
        assert cache.stats()["entries"] == cache.stats()["typo_keys"] == 2  # bounded with it
        assert await cache.lookup("tenant:a", CONTEXT, "How to fix a leaky faucet?", None,
                                  "semantic") is None  # the least recent, evicted
        assert await cache.lookup("tenant:a", CONTEXT, "Is it raining in Paris?", None,
                                  "semantic") is not None
    finally:
        await cache.close()


def test_a_key_made_for_an_entry_removed_meanwhile_is_dropped() -> None:
    table = EntryTable(typos=True)
    entry = StoredEntry(1, "ns", CONTEXT, exact_key("ns", CONTEXT, TYPO), TYPO, True, 0.0, None)
    table.add(entry)
    assert [e.entry_id for e in table.unkeyed(10)] == [1]
    key = typo_key("ns", CONTEXT, TYPO, load().fold(TYPO))
    table.remove(1)  # while its key was being made in the thread
    table.set_typo_keys([(1, key)])
    assert table.typo_key_count == 0 and table.unkeyed_count == 0
    assert table.typo_match("ns", CONTEXT, ASKED, ASKED) is None


async def test_a_new_entry_whose_fold_was_forgotten_is_keyed_in_the_background(
        tmp_path: Path) -> None:
    cache = await open_cache(tmp_path)
    try:
        # never folded through key_text: no fold to reuse, so none is made on the loop
        await cache.store("tenant:a", CONTEXT, TYPO, unit_vectors(1)[0], answer())
        await cache.flush()
        assert cache.stats()["typo_keys_pending"] == 1
        await cache.typo_keys_made()
        assert cache.stats()["typo_keys"] == 1
        assert await cache.lookup("tenant:a", CONTEXT, ASKED, None, "semantic") is not None
    finally:
        await cache.close()
