"""Starting tasks and knowing, without sleeping, that each has gone as far as it can; and, for
state another process changes (a replica, a server), polling a condition with a deadline."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Coroutine, Sequence
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


async def until(condition: Callable[[], object], what: str, timeout_s: float) -> float:
    """Seconds until ``condition()`` (a value, or an awaitable of one) is true; an
    ``AssertionError`` naming ``what`` once ``timeout_s`` have passed without it."""
    start = time.monotonic()
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.01)
