"""The gateway's lifecycle as explicit states: starting, ready, draining, closed.

``/readyz`` answers 200 only in ``ready``. Shutdown keeps one deadline: ``drain(cut_at)``
moves to ``draining``, and every stream still running at ``cut_at`` (loop time) is cut there
(``streaming()`` raises ``TimeoutError`` inside it) so that it can end with the same in-stream
error event as any broken stream. ``serving()`` counts the requests in flight and
``wait_idle(until)`` waits for the last of them. ``stop_task`` ends a cleanup context's
background task. Touches nothing but the event loop's timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator, Iterator
from typing import Any


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    CLOSED = "closed"


class Lifecycle:
    def __init__(self) -> None:
        self.state = State.STARTING
        self.in_flight = 0
        self._idle: asyncio.Event | None = None
        self._cut_at: float | None = None
        self._cuts: set[asyncio.Timeout] = set()

    def move(self, state: State) -> None:
        self.state = state

    def drain(self, cut_at: float | None = None) -> None:
        """Refuse new work from now on; cut the streams still running at ``cut_at``."""
        self.state = State.DRAINING
        if cut_at is not None:
            self._cut_at = cut_at
            for cut in self._cuts:
                cut.reschedule(cut_at)

    @contextlib.asynccontextmanager
    async def streaming(self) -> AsyncIterator[None]:
        """The span of a stream's body: a ``TimeoutError`` at the shutdown deadline."""
        async with asyncio.timeout_at(self._cut_at) as cut:
            self._cuts.add(cut)
            try:
                yield
            finally:
                self._cuts.discard(cut)

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """One request in flight, from its handler's start to its end."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0 and self._idle is not None:
                self._idle.set()

    async def wait_idle(self, until: float) -> bool:
        """Wait until no request is in flight or the loop time ``until``; True when idle."""
        loop = asyncio.get_running_loop()
        while self.in_flight:
            self._idle = asyncio.Event()
            try:
                async with asyncio.timeout_at(until):
                    await self._idle.wait()
            except TimeoutError:
                return self.in_flight == 0
            finally:
                self._idle = None
            if loop.time() >= until:
                break
        return self.in_flight == 0


async def stop_task(task: asyncio.Task[Any]) -> None:
    """Cancel a background task and wait until it has finished."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
