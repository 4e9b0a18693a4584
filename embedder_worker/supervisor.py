"""Keeps embedding workers running and the gateway's pool connected to them.

Managed mode (``settings.sockets`` empty): start ``settings.workers`` subprocesses
(``sys.executable -m embedder_worker``) with sockets in a run directory, wait for each one's READY
line, attach it to the pool, and restart a worker that exits with exponential backoff (reset once a
worker has stayed up for a while). Sidecar mode: connect to the given sockets, and reconnect with
backoff whenever one goes away. ``start()`` never waits for a worker: the gateway serves (degraded)
while workers warm up, and ``pool.ready`` tells ``/readyz`` when one has answered.

``embedder_context(settings)`` is the aiohttp cleanup context: the pool is stored under
``EMBEDDER_POOL`` before ``yield``; the pool is closed and the workers stopped (SIGTERM, they
drain) after it.

A run directory holds ``owner.pid``: the gateway's process id and start time. A gateway killed
before its cleanup (SIGKILL) leaves its directory behind; the next one to start removes every
``embedder-*`` directory in the temp folder whose owner is dead (``remove_stale_run_dirs``),
and leaves alone those whose owner lives and those with no owner file (not ours to judge).
Touches the run directories, the worker processes it started and the sockets it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

import embedder_worker
from embedder_worker.client import EmbedderError, EmbedderPool
from embedder_worker.model_files import missing_model
from embedder_worker.settings import EmbedderSettings

logger = logging.getLogger(__name__)

EMBEDDER_POOL = web.AppKey("embedder_pool", EmbedderPool)
READY_PREFIX = b"READY"
RUN_DIR_PREFIX = "embedder-"
OWNER_FILE = "owner.pid"
_STABLE_S = 30.0  # a worker up this long has its restart backoff reset


class Backoff:
    """Exponential delays between attempts, reset after a stable run."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self._initial_s = initial_s
        self._max_s = max_s
        self.next_s = initial_s

    def record(self, ran_for_s: float) -> float:
        """The delay before the next attempt, given how long the last one lasted."""
        if ran_for_s >= _STABLE_S:
            self.next_s = self._initial_s
        delay = self.next_s
        self.next_s = min(self.next_s * 2, self._max_s)
        return delay


def worker_command(settings: EmbedderSettings, socket_path: Path) -> list[str]:
    """The argv that starts one worker for ``settings`` on ``socket_path``."""
    argv = [sys.executable, "-m", "embedder_worker", "--socket", str(socket_path)]
    argv += ["--model", str(settings.model_dir), "--threads", str(settings.threads)]
    argv += ["--lanes", str(settings.lanes)]
    argv += ["--max-batch", str(settings.max_batch), "--max-wait-ms", str(settings.max_wait_ms)]
    argv += ["--drain-timeout-s", str(settings.drain_timeout_s), "--exit-on-stdin-eof"]
    if settings.pooling is not None:
        argv += ["--pooling", settings.pooling]
    if settings.normalize is not None:
        argv.append("--normalize" if settings.normalize else "--no-normalize")
    if settings.max_length is not None:
        argv += ["--max-length", str(settings.max_length)]
    if settings.query_prefix:
        argv += ["--query-prefix", settings.query_prefix]
    if settings.quantize:
        argv.append("--quantize")
    return argv


def child_env() -> dict[str, str]:
    """The environment, with this package importable even when it is not installed."""
    env = dict(os.environ)
    root = str(Path(embedder_worker.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


async def _wait_ready(process: asyncio.subprocess.Process) -> None:
    """Read the worker's stdout up to its READY line; EmbedderError if it exits first."""
    assert process.stdout is not None
    while True:
        line = await process.stdout.readline()
        if not line:
            code = await process.wait()
            raise EmbedderError(f"worker exited with status {code} before it was ready")
        if line.startswith(READY_PREFIX):
            return


async def _stop(process: asyncio.subprocess.Process, timeout_s: float) -> None:
    """SIGTERM (the worker drains), then SIGKILL after ``timeout_s``."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            async with asyncio.timeout(timeout_s):
                await process.wait()
        except TimeoutError:
            logger.warning("worker %d did not drain in %.1f s, killing it", process.pid, timeout_s)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    await process.wait()
    if process.stdin is not None:
        process.stdin.close()


class ManagedWorker:
    """One worker slot: start, wait for READY, attach, watch; restart when it exits."""

    def __init__(self, settings: EmbedderSettings, socket_path: Path, pool: EmbedderPool) -> None:
        self.settings = settings
        self.socket_path = socket_path
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._pool = pool
        self._backoff = Backoff(settings.restart_backoff_s, settings.restart_backoff_max_s)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self._run_once()
            except (OSError, TimeoutError, EmbedderError) as exc:
                logger.error("embedder worker %s failed: %s", self.socket_path.name, exc)
            delay = self._backoff.record(loop.time() - started)
            logger.info("restarting embedder worker %s in %.2f s", self.socket_path.name, delay)
            await asyncio.sleep(delay)  # the backoff itself, not a wait for an event

    async def _run_once(self) -> None:
        process = await asyncio.create_subprocess_exec(
            *worker_command(self.settings, self.socket_path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=child_env(),
            # Not in the gateway's process group: a Ctrl-C must not kill workers under the
            # gateway's feet; they are stopped in order at shutdown, or see stdin close if it dies.
            start_new_session=True,
        )
        self.process = process
        self.starts += 1
        if self.starts > 1 and self._pool.on_restart is not None:
            self._pool.on_restart()
        try:
            async with asyncio.timeout(self.settings.start_timeout_s):
                await _wait_ready(process)
                await self._pool.attach(self.socket_path)
            assert process.stdout is not None
            while await process.stdout.readline():  # EOF when the worker exits
                pass
            code = await process.wait()
            logger.warning("embedder worker %d exited with status %s", process.pid, code)
        finally:
            await _stop(process, self.settings.drain_timeout_s)


class SidecarWorker:
    """A worker someone else runs: connect, and reconnect whenever it goes away."""

    def __init__(self, settings: EmbedderSettings, socket_path: Path, pool: EmbedderPool) -> None:
        self.socket_path = socket_path
        self._pool = pool
        self._backoff = Backoff(settings.restart_backoff_s, settings.restart_backoff_max_s)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                conn = await self._pool.attach(self.socket_path)
                await conn.wait_closed()
            except (OSError, TimeoutError, EmbedderError) as exc:
                logger.debug("sidecar %s not reachable: %s", self.socket_path, exc)
            await asyncio.sleep(self._backoff.record(loop.time() - started))


class EmbedderSupervisor:
    """Owns the worker slots (managed or sidecar) and the pool they feed."""

    def __init__(self, settings: EmbedderSettings, pool: EmbedderPool | None = None) -> None:
        self.settings = settings.validate()
        self.pool = pool or EmbedderPool(settings.call_timeout_ms, settings.lru_size)
        self.workers: list[ManagedWorker | SidecarWorker] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._own_run_dir: Path | None = None

    async def start(self) -> None:
        """Start the slots and return at once; ``pool.ready`` turns true when one answers."""
        if self.settings.sidecar:
            self.workers = [
                SidecarWorker(self.settings, p, self.pool) for p in self.settings.sockets
            ]
        else:
            self._check_model()
            run_dir = self._run_dir()
            self.workers = [
                ManagedWorker(self.settings, run_dir / f"worker-{i}.sock", self.pool)
                for i in range(self.settings.workers)
            ]
        self._tasks = [
            asyncio.create_task(worker.run(), name=f"embedder-slot {worker.socket_path.name}")
            for worker in self.workers
        ]

    def _check_model(self) -> None:
        if (problem := missing_model(self.settings.model_dir)) is not None:
            logger.error("%s", problem)

    def _run_dir(self) -> Path:
        if self.settings.run_dir is not None:
            self.settings.run_dir.mkdir(parents=True, exist_ok=True)
            return self.settings.run_dir
        remove_stale_run_dirs(Path(tempfile.gettempdir()))
        self._own_run_dir = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX))
        (self._own_run_dir / OWNER_FILE).write_text(_owner(os.getpid()), "ascii")
        return self._own_run_dir

    def pids(self) -> list[int | None]:
        """The current process id of each managed worker (None while it is not running)."""
        return [
            w.process.pid if w.process is not None and w.process.returncode is None else None
            for w in self.workers
            if isinstance(w, ManagedWorker)
        ]

    async def close(self) -> None:
        """Close the pool, then stop the slots (managed workers get SIGTERM and drain)."""
        await self.pool.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._own_run_dir is not None:
            shutil.rmtree(self._own_run_dir, ignore_errors=True)


def _owner(pid: int) -> str:
    """``pid`` and its start time, so a reused process id is not taken for the owner."""
    return f"{pid} {_start_time(pid)}\n"


def _start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text("ascii")
    except OSError:
        return "?"  # no procfs here: the process id alone decides
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def _alive(owner: str) -> bool:
    pid_text, _, started = owner.strip().partition(" ")
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return started in ("", "?") or _start_time(pid) in ("?", started)


def remove_stale_run_dirs(parent: Path) -> list[Path]:
    """Remove the ``embedder-*`` run directories in ``parent`` whose owning process is dead."""
    removed = []
    for path in parent.glob(RUN_DIR_PREFIX + "*"):
        try:
            owner = (path / OWNER_FILE).read_text("ascii")
            stale = path.stat().st_uid == os.getuid() and not _alive(owner)
        except (OSError, ValueError):
            continue  # no owner file, or not ours: leave it
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            logger.info("removed %s, left by a gateway that was killed", path)
            removed.append(path)
    return removed


def embedder_context(
    settings: EmbedderSettings, key: web.AppKey[EmbedderPool] = EMBEDDER_POOL
) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp cleanup context that runs the workers and stores their pool under ``key``.

    It returns at once: the app serves while the workers warm up (``pool.ready`` says when).
    """

    async def context(app: web.Application) -> AsyncIterator[None]:
        supervisor = EmbedderSupervisor(settings)
        app[key] = supervisor.pool
        await supervisor.start()
        try:
            yield
        finally:
            await supervisor.close()

    return context
