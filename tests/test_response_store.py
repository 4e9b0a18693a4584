"""Tests for gateway/tenants/response_store.py: stored responses per tenant, kept for a while."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.tenants.response_store import SqliteResponseStore, StoredResponse

CONVERSATION = ({"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"})


def stored(response_id: str = "resp_1") -> StoredResponse:
    return StoredResponse({"id": response_id, "object": "response", "output": []}, CONVERSATION)


async def test_a_response_comes_back_to_its_tenant_after_a_restart(tmp_path: Path) -> None:
    store = await SqliteResponseStore.open(tmp_path / "responses.db")
    await store.put("acme", stored(), retention_s=3600)
    await store.close()
    store = await SqliteResponseStore.open(tmp_path / "responses.db")
    try:
        assert await store.get("acme", "resp_1") == stored()
    finally:
        await store.close()


async def test_another_tenant_can_neither_read_nor_delete_it(tmp_path: Path) -> None:
    store = await SqliteResponseStore.open(tmp_path / "responses.db")
    try:
        await store.put("acme", stored(), retention_s=3600)
        assert await store.get("other", "resp_1") is None
        assert not await store.delete("other", "resp_1")
        assert await store.delete("acme", "resp_1")
        assert await store.get("acme", "resp_1") is None
    finally:
        await store.close()


async def test_expired_responses_are_never_served_and_are_swept_by_later_writes(
    tmp_path: Path,
) -> None:
    store = await SqliteResponseStore.open(tmp_path / "responses.db")
    try:
        await store.put("acme", stored("resp_old"), retention_s=-1)  # already past its time
        assert await store.get("acme", "resp_old") is None
        assert not await store.delete("acme", "resp_old")
        await store.put("acme", stored("resp_new"), retention_s=3600)
        await store.flush()
        rows = await store._db.execute_fetchall("SELECT id FROM responses")
        assert [r[0] for r in rows] == ["resp_new"]
    finally:
        await store.close()


async def test_a_queued_response_is_served_before_its_write_and_a_deleted_one_never_written(
    tmp_path: Path,
) -> None:
    store = await SqliteResponseStore.open(tmp_path / "responses.db")
    try:
        await store.put("acme", stored("resp_kept"), retention_s=3600)
        await store.put("acme", stored("resp_gone"), retention_s=3600)
        assert await store.get("acme", "resp_kept") == stored("resp_kept")  # still queued
        assert await store.delete("acme", "resp_gone")
        await store.flush()
        rows = await store._db.execute_fetchall("SELECT id FROM responses")
        assert [r[0] for r in rows] == ["resp_kept"]
        assert await store.get("acme", "resp_kept") == stored("resp_kept")  # now from SQLite
    finally:
        await store.close()


async def test_the_writer_task_writes_what_requests_queue(tmp_path: Path) -> None:
    store = await SqliteResponseStore.open(tmp_path / "responses.db")
    store.start()
    try:
        await store.put("acme", stored(), retention_s=3600)
        deadline = asyncio.get_running_loop().time() + 5
        while not await store._db.execute_fetchall("SELECT id FROM responses"):
            assert asyncio.get_running_loop().time() < deadline, "never written"
            await asyncio.sleep(0)  # yield to the writer; the deadline bounds the wait
    finally:
        await store.close()


async def test_a_response_that_cannot_be_written_does_not_hold_back_the_others(
        tmp_path: Path) -> None:
    # A set is not JSON: kept in the batch, it failed every later write, and every later put.
    unwritable = StoredResponse({"id": "resp_bad", "output": {1, 2}}, CONVERSATION)
    store = await SqliteResponseStore.open(tmp_path / "responses.db")
    await store.put("acme", unwritable, retention_s=3600)
    await store.flush()
    await store.put("acme", stored("resp_2"), retention_s=3600)
    await store.close()
    store = await SqliteResponseStore.open(tmp_path / "responses.db")
    try:
        assert await store.get("acme", "resp_2") == stored("resp_2")
        assert await store.get("acme", "resp_bad") is None
    finally:
        await store.close()


async def test_a_shared_store_returns_from_put_once_another_connection_can_read_it(
    tmp_path: Path,
) -> None:
    """One of a node's processes: the follow-up may reach a sibling, which reads the file."""
    writer = await SqliteResponseStore.open(tmp_path / "responses.db", shared=True)
    sibling = await SqliteResponseStore.open(tmp_path / "responses.db")
    writer.start()
    try:
        puts = [writer.put("acme", stored(f"resp_{i}"), retention_s=3600) for i in range(3)]
        await asyncio.gather(*puts)  # queued together: one write, three waiters
        for i in range(3):
            assert await sibling.get("acme", f"resp_{i}") == stored(f"resp_{i}")
    finally:
        await writer.close()
        await sibling.close()
