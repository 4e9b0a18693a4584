"""Fixtures for the embedding worker's tests: the real model, reference vectors, real workers.

Test modules load this with ``pytest_plugins = ["tests.embedder_fixtures"]``. The model directory
comes from ``GATEWAY_TEST_MODEL_DIR`` (default ``models/all-MiniLM-L6-v2`` under the repository
root) and is built from the installed weights when missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from embedder_worker import build_model
from embedder_worker.model import OnnxEmbedder
from embedder_worker.supervisor import READY_PREFIX

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = Path(__file__).resolve().parent / "data" / "minilm_ref.npz"
_MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 108 bytes


@dataclass(frozen=True)
class Reference:
    sentences: list[str]
    embeddings: npt.NDArray[np.float32]


@dataclass
class WorkerProcess:
    """A worker started by a test: its process and socket."""

    process: asyncio.subprocess.Process
    socket: Path

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)
        code = await self.process.wait()
        if self.process.stdin is not None:
            self.process.stdin.close()
        return code


@pytest.fixture(scope="session")
def model_dir() -> Path:
    configured = os.environ.get("GATEWAY_TEST_MODEL_DIR")
    path = Path(configured) if configured else ROOT / "models" / "all-MiniLM-L6-v2"
    if not path.is_absolute():
        path = ROOT / path
    build_model.build(path)  # does nothing when already built
    return path


@pytest.fixture(scope="session")
def reference() -> Reference:
    data = np.load(REFERENCE)
    return Reference([str(s) for s in data["sentences"]], data["embeddings"].astype(np.float32))


@pytest.fixture(scope="session")
def embedder(model_dir: Path) -> OnnxEmbedder:
    """The model in this process, to compare what comes over the socket with."""
    return OnnxEmbedder(model_dir)


@pytest.fixture
def sock_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for sockets: tmp_path, unless its path is too long for AF_UNIX."""
    if len(str(tmp_path)) < _MAX_SOCKET_PATH - 20:
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="ew-") as short:
        yield Path(short)


async def start_worker(model_dir: Path, socket: Path, *extra: str) -> WorkerProcess:
    """Start ``python -m embedder_worker`` and return once it printed its READY line."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "embedder_worker", "--socket", str(socket), "--model",
        str(model_dir), "--exit-on-stdin-eof", "--log-level", "WARNING", *extra,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    worker = WorkerProcess(process, socket)
    assert process.stdout is not None
    line = await process.stdout.readline()
    if not line.startswith(READY_PREFIX):
        await worker.stop(signal.SIGKILL)
        raise AssertionError(f"worker did not get ready: {line!r}")
    return worker


StartWorker = Callable[[Path], Awaitable[WorkerProcess]]


@pytest.fixture
async def worker_factory(model_dir: Path) -> AsyncIterator[StartWorker]:
    """Start workers on given sockets; any still running at the end are killed."""
    started: list[WorkerProcess] = []

    async def start(socket: Path) -> WorkerProcess:
        started.append(await start_worker(model_dir, socket))
        return started[-1]

    try:
        yield start
    finally:
        for each in started:
            await each.stop(signal.SIGKILL)


@pytest.fixture
async def worker(model_dir: Path, sock_dir: Path) -> AsyncIterator[WorkerProcess]:
    """One real worker subprocess on a socket in the test's directory."""
    started = await start_worker(model_dir, sock_dir / "w.sock")
    try:
        yield started
    finally:
        await started.stop(signal.SIGKILL)
