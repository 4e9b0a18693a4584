"""The background task that writes a queue in batches: the ledger's, the routing signals', the
stored responses'.

It wakes every ``interval_s`` (or only when woken, with no interval) or at once on ``wake()``
(an owner calls it when a full batch waits), and calls the owner's ``write_queued``, which
writes what is queued at that moment: what arrives during a write waits for the next wake, so
that under steady load the writes stay few and large. Writing on until the queue was empty kept
the ledger's and the signals' writers busy most of the time, in transactions of the few rows
that came meanwhile, each a round of thread work and loop wake-ups that delayed requests
(bench/RESULTS.md, issue 20). A ``write_queued`` that raises is logged and the task goes on.
Touches nothing but its own task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class BatchWriter:
    """One owner's writer task; ``closing`` tells the owner to stop taking rows."""

    def __init__(self, write_queued: Callable[[], Awaitable[object]], *,
                 interval_s: float | None, name: str) -> None:
        self._write_queued = write_queued
        self._interval_s = interval_s
        self._name = name
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.closing = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        """Stop after the write under way (the owner then writes what is left)."""
        self.closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while not self.closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
            self._wake.clear()
            try:
                await self._write_queued()
            except Exception:  # the owner keeps or counts what failed; the next wake retries
                log.exception("%s: a batch write failed", self._name)
