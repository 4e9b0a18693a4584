"""Starting tasks and knowing, without sleeping, that each has gone as far as it can."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


async def started(coros: Sequence[Coroutine[Any, Any, T]]) -> list[asyncio.Task[T]]:
    """Tasks for ``coros``, returned once every one of them waits on something.

    Tasks run in the order they were made, each until it waits; the last one sets an event as it
    starts, and the caller, waiting on it, runs again only after that task has waited too.
    """
    last_started = asyncio.Event()

    async def run(coro: Coroutine[Any, Any, T], last: bool) -> T:
        if last:
            last_started.set()
        return await coro

    tasks = [asyncio.create_task(run(c, i == len(coros) - 1)) for i, c in enumerate(coros)]
    await last_started.wait()
    return tasks
