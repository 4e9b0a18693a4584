"""The gateway's lifecycle as explicit states: starting, ready, draining, closed.

``/readyz`` answers 200 only in ``ready``; a draining gateway finishes what it has (streams
included, up to the grace period) and refuses new work with 503. ``stop_task`` ends a
cleanup context's background task.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from typing import Any


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    CLOSED = "closed"


class Lifecycle:
    def __init__(self) -> None:
        self.state = State.STARTING

    def move(self, state: State) -> None:
        self.state = state


async def stop_task(task: asyncio.Task[Any]) -> None:
    """Cancel a background task and wait until it has finished."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
