"""embedder_worker/supervisor.py: run directories left by a killed gateway are cleaned at start."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

import pytest

from embedder_worker.settings import EmbedderSettings
from embedder_worker.supervisor import (
    OWNER_FILE,
    EmbedderSupervisor,
    _owner,
    remove_stale_run_dirs,
)
from tests.conftest import ROOT


async def _dead_pid() -> int:
    """The id of a real process that was SIGKILLed and reaped."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(60)")
    proc.kill()
    await proc.wait()
    return proc.pid


def _run_dir(parent: Path, name: str, owner: str | None) -> Path:
    path = parent / name
    path.mkdir()
    (path / "worker-0.sock").write_bytes(b"")
    if owner is not None:
        (path / OWNER_FILE).write_text(owner, "ascii")
    return path


async def test_only_directories_whose_owner_died_are_removed(tmp_path: Path) -> None:
    dead = _run_dir(tmp_path, "embedder-dead", _owner(await _dead_pid()))
    live = _run_dir(tmp_path, "embedder-live", _owner(os.getpid()))
    reused = _run_dir(tmp_path, "embedder-reused", f"{os.getpid()} 1\n")  # our id, another start
    foreign = _run_dir(tmp_path, "embedder-foreign", None)
    other = _run_dir(tmp_path, "other-dead", _owner(await _dead_pid()))
    assert sorted(remove_stale_run_dirs(tmp_path)) == sorted([dead, reused])
    assert not dead.exists() and not reused.exists()
    assert live.exists() and foreign.exists() and other.exists()


async def test_a_starting_supervisor_removes_a_killed_gateways_directory_and_owns_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale = _run_dir(tmp_path, "embedder-stale", _owner(await _dead_pid()))
    supervisor = EmbedderSupervisor(EmbedderSettings(
        model_dir=ROOT / "models" / "all-MiniLM-L6-v2", workers=1))
    await supervisor.start()
    try:
        # Live first: a worker cancelled while it spawns would outlive the test, loading its model.
        await asyncio.wait_for(supervisor.pool.wait_live(1), timeout=60)
        assert not stale.exists()
        (own,) = tmp_path.glob("embedder-*")
        assert (own / OWNER_FILE).read_text("ascii") == _owner(os.getpid())
    finally:
        await supervisor.close()
    assert not own.exists()
