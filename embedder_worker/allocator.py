"""The C allocator's share of a worker's memory: fewer arenas, and free pages handed back.

glibc's malloc gives each thread that allocates its own arena (up to eight per core), and an
arena keeps the pages its freed blocks held. A worker's threads (the loop, the inference lanes,
onnxruntime's intra-op pool) each allocate batch tensors, so idle workers carried one arena of
high-water pages per thread. ``limit_arenas`` caps them before any thread starts;
``release_free_memory`` returns what the model's load and warm-up freed, and ``IdleTrim`` what a
burst of batches freed, once the worker is quiet. No-ops where the C library is not glibc.
Touches only this process's allocator.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging

logger = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # mallopt parameter number, from glibc's malloc.h
ARENAS = 2  # the loop thread and the lanes share these: no throughput lost (bench/RESULTS.md)


@functools.cache  # find_library runs `ldconfig -p` in a subprocess: once a process, not a trim
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap malloc's arenas; call before starting threads. False where it cannot."""
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(_M_ARENA_MAX, arenas))


def release_free_memory() -> bool:
    """Give the pages of freed blocks back to the system. False where it cannot, or none were."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


class IdleTrim:
    """Hands freed pages back once the worker has been quiet for ``quiet_s``.

    A burst of batches leaves the arenas holding its high-water pages; ``touch()`` after each
    batch (on the event loop) keeps one timer that trims only after a quiet spell, so a busy
    worker never pays for ``malloc_trim`` (it walks every arena) between batches.
    """

    def __init__(self, quiet_s: float = 2.0) -> None:
        self.quiet_s = quiet_s
        self.trims = 0
        self._last_s = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def touch(self) -> None:
        loop = asyncio.get_running_loop()
        self._last_s = loop.time()
        if self._timer is None:
            self._timer = loop.call_later(self.quiet_s, self._due)

    def _due(self) -> None:
        loop = asyncio.get_running_loop()
        quiet_for_s = loop.time() - self._last_s
        if quiet_for_s < self.quiet_s:  # work came meanwhile: wait for the rest of the spell
            self._timer = loop.call_later(self.quiet_s - quiet_for_s, self._due)
            return
        self._timer = None
        self.trims += 1
        release_free_memory()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
