"""The worker's allocator: capped arenas, and freed pages handed back after a quiet spell
(``embedder_worker/allocator.py``)."""

from __future__ import annotations

from embedder_worker.allocator import IdleTrim, limit_arenas, release_free_memory
from tests.tasks import until


def test_arenas_can_be_capped_and_free_pages_returned_on_glibc() -> None:
    assert limit_arenas()
    blocks = [bytearray(64 * 1024) for _ in range(2000)]  # ~128 MiB, then freed
    del blocks
    assert release_free_memory(), "glibc handed no freed page back"


async def test_a_quiet_spell_after_work_trims_once_and_new_work_arms_it_again() -> None:
    trim = IdleTrim(quiet_s=0.01)
    trim.touch()
    trim.touch()  # work within the spell: still one timer
    await until(lambda: trim.trims == 1, "the first trim", timeout_s=5)
    trim.touch()
    await until(lambda: trim.trims == 2, "the trim after new work", timeout_s=5)
    trim.cancel()


async def test_a_cancelled_trim_never_runs() -> None:
    trim = IdleTrim(quiet_s=0.01)
    trim.touch()
    trim.cancel()
    other = IdleTrim(quiet_s=0.02)  # a trim armed later that does run: the first had its turn
    other.touch()
    await until(lambda: other.trims == 1, "the later trim", timeout_s=5)
    assert trim.trims == 0
