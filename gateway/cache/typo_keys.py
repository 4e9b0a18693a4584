"""Typo keys: the loose key of a stored text with its typos folded, and the task that makes them.

A semantic entry is also found by its typo key (``EntryTable.typo_match``), so that a typo on
either side still meets its stored question. Making the key means folding the text
(``spelling.Speller.fold``, ~13 µs for a clean one), which, done for every row as the cache
opened, held the event loop 1–1.5 s at 100,000 entries. So the cache keys its own new entries at
once when the fold the request made to embed the text is still remembered (``KeyFolder``), and
``fill``, a task the cache owns, keys the rest (rows loaded at open, entries a peer stored, a
text whose fold was forgotten) in batches folded in a worker thread; the loop only installs each
batch's keys. Until an entry has its key only
its typo step is missing: its exact keys and its vector serve as before.

Touches nothing outside the table it is given; the speller is pure and safe to share with a
thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from gateway.cache.entries import EntryTable
from gateway.cache.fingerprint import loose_key
from gateway.cache.store import StoredEntry

Fold = Callable[[str], str]
BATCH = 1000  # texts folded per hop to the thread: ~13 ms of work, a few dict writes back
_YIELD_EVERY = 4  # texts folded between two offers of the GIL: ~0.05 ms


def typo_key(namespace: str, fingerprint: str, text: str, folded: str) -> bytes | None:
    """The loose key of ``folded``, ``text`` with its typos folded; None when folding left it as
    it is (its own loose key already finds it)."""
    return None if folded == text else loose_key(namespace, fingerprint, folded)


def typo_keys(fold: Fold, entries: Sequence[StoredEntry]) -> list[tuple[int, bytes | None]]:
    """In the worker thread: each entry's typo key. Every ``_YIELD_EVERY`` texts the thread
    hands the GIL over (``sleep(0)``), so a request on the loop waits a fraction of a
    millisecond for it, not the interpreter's 5 ms switch interval."""
    keys: list[tuple[int, bytes | None]] = []
    for n, e in enumerate(entries):
        if n % _YIELD_EVERY == 0:
            time.sleep(0)
        keys.append((e.entry_id, typo_key(e.namespace, e.fingerprint, e.text, fold(e.text))))
    return keys


async def fill(table: EntryTable, fold: Fold, batch: int = BATCH) -> None:
    """Key the table's waiting entries, a batch at a time in a thread, whenever some come in;
    until cancelled. Only memory: safe to cancel at any point."""
    while True:
        await table.unkeyed_added.wait()
        table.unkeyed_added.clear()
        while waiting := table.unkeyed(batch):
            table.set_typo_keys(await asyncio.to_thread(typo_keys, fold, waiting))
