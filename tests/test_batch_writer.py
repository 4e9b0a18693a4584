"""Tests for gateway/core/batch_writer.py: the background task the ledger, the routing signals
and the stored responses write their queues with."""

from __future__ import annotations

import asyncio

import pytest

from gateway.core.batch_writer import BatchWriter


async def test_a_wake_writes_at_once_and_a_failed_write_does_not_stop_the_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    failed, written = asyncio.Event(), asyncio.Event()

    async def write_queued() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            failed.set()
            raise OSError("disk full")
        written.set()

    writer = BatchWriter(write_queued, interval_s=3600, name="test-writer")
    writer.start()
    try:
        writer.wake()  # the first write fails ...
        await asyncio.wait_for(failed.wait(), 10)
        writer.wake()  # ... and the task is still there to write the next batch
        await asyncio.wait_for(written.wait(), 10)
    finally:
        await writer.close()
    assert calls[:2] == [0, 1] and writer.closing  # (a third: the write close's wake began)
    assert "test-writer: a batch write failed" in caplog.text


async def test_close_stops_the_task_without_a_wake_or_an_interval() -> None:
    calls: list[None] = []

    async def write_queued() -> None:
        calls.append(None)

    writer = BatchWriter(write_queued, interval_s=None, name="test-writer")
    writer.start()
    await asyncio.wait_for(writer.close(), 10)
    assert writer.closing and len(calls) <= 1  # at most the write the close's wake began
