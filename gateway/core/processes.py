"""Several gateway processes on one port: the supervisor that ``gateway serve`` becomes with
``[server] processes`` above 1, and the link each of its children keeps with it.

One event loop relays about 28 µs of CPU per streamed chunk (bench/RESULTS.md), so a node's
streams are capped by one core unless several processes share the port. The supervisor listens
on nothing itself. It refuses settings that N processes could not share (``processes_problem``),
runs the once-only start-up work it is handed (the schema, the first keys: printed once), starts
the embedding workers and hands their sockets to the children (the sidecar mode), then starts N
children (``python -m gateway serve`` with hidden flags) that each bind the same host:port with
SO_REUSEPORT, so the kernel spreads connections over them. A child says over a pipe that it
listens, or why it could not (``ChildLink``): one that cannot start ends the supervisor with
that one-line reason and status 1; one that dies later is restarted with backoff, and a
restart that fails is tried again (the other children go on serving). SIGTERM or
SIGINT goes to every child, which drains for ``shutdown_grace_s``; the supervisor exits once all
have, then stops the workers. A child watches its stdin, which only the supervisor holds, and
drains when it closes, so a supervisor killed outright leaves no child on the port.

Touches: its child processes and their pipes, the embedding workers it starts, signals, and
the node's temporary folder (the children's sockets for each other, for ``/metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from embedder_worker.supervisor import Backoff, EmbedderSupervisor, child_env
from gateway.core.config import Settings
from gateway.core.redact import redact

log = logging.getLogger(__name__)

ChildCommand = Callable[[int, int, Sequence[Path], Path], list[str]]
"""argv of child ``index`` that reports on descriptor ``ready_fd``, embeds over ``sockets`` and
keeps its socket for its siblings in ``node_dir``."""

START_TIMEOUT_S = 120.0
"""From a child's spawn to its listening: its start-up (stores, routes) on a loaded machine."""
STOP_MARGIN_S = 30.0
"""Past ``shutdown_grace_s``, what a child gets to flush and close before it is killed."""
RESTART_BACKOFF_S = (0.5, 30.0)
LISTENING = "listening"
FAILED = "failed "


def processes_problem(settings: Settings) -> str | None:
    """Why these settings cannot run as several processes, as one line with the fix."""
    server, cluster = settings.server, settings.cluster
    if server.processes <= 1:
        return None
    missing = [(name, env) for name, value, env in (
        ("redis_url", cluster.redis_url, cluster.redis_url_env),
        ("database_url", cluster.database_url, cluster.database_url_env)) if not value]
    if missing:
        return (f"server.processes = {server.processes} needs [cluster] redis_url and "
                f"database_url ({' and '.join(name for name, _ in missing)} missing: set "
                f"{' and '.join(env for _, env in missing)}): without them each process would "
                f"keep its own rate limits, budgets, keys and ledger; or set processes = 1")
    if settings.routing.learning.enabled:
        return (f"server.processes = {server.processes} with [routing.learning] enabled: each "
                f"process's learner would learn from its own share of the traffic only; "
                f"set processes = 1, or enabled = false")
    if server.port == 0:
        return (f"server.processes = {server.processes} needs a fixed port (each process would "
                f"get another with port = 0): pass --port N")
    return None


def child_settings(settings: Settings, index: int, sockets: Sequence[Path],
                   node_dir: Path | None) -> Settings:
    """Child ``index``'s settings: one process, the supervisor's embedding workers, its own
    copy of the cache's graphs (each process keeps an index, filled from the shared table),
    the node's folder for the sockets the processes reach each other on (metrics)."""
    server = replace(settings.server, processes=1, process_index=index, node_dir=node_dir)
    embedder = settings.embedder
    if embedder is not None and sockets:
        embedder = replace(embedder, sockets=tuple(sockets))
    cache = replace(settings.cache, index_dir=settings.cache.index_dir / f"process-{index}")
    return replace(settings, server=server, embedder=embedder, cache=cache)


class ChildLink:
    """The child's end: one line to the supervisor (listening, or why not), and the watch on
    its stdin, which closes when the supervisor goes. The supervisor prints the reason as it
    came, past the child's log redaction, so ``secrets`` are masked here."""

    def __init__(self, ready_fd: int, secrets: Iterable[str] = ()) -> None:
        self._fd: int | None = ready_fd
        self._secrets = tuple(secrets)

    def listening(self) -> None:
        self._say(LISTENING)

    def failed(self, reason: str) -> None:
        self._say(FAILED + redact(reason, self._secrets))

    def _say(self, line: str) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):  # the supervisor is gone: nobody to tell
            os.write(fd, (" ".join(line.split()) + "\n").encode())
        os.close(fd)

    @staticmethod
    def watch_parent(loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
        """Call ``stop`` once stdin reaches its end (the supervisor closed it or died)."""
        def readable() -> None:
            try:
                data = os.read(0, 4096)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(0)
                stop()
        loop.add_reader(0, readable)


class ChildFailed(Exception):
    """A child that could not start: the message is its one-line reason."""


class Supervisor:
    """Runs ``settings.server.processes`` children on one port until a signal or a failure."""

    def __init__(self, settings: Settings, command: ChildCommand) -> None:
        self.settings = settings
        self.command = command
        self.children: dict[int, asyncio.subprocess.Process] = {}
        self._sockets: tuple[Path, ...] = ()
        self._node_dir = Path()

    async def run(self, first_start: Callable[[], Awaitable[None]]) -> int:
        """Start, serve until SIGTERM/SIGINT (0 once every child drained) or until a child
        cannot start (1, its reason on stderr)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await first_start()
        embedders = await self._start_embedders()
        try:
            with tempfile.TemporaryDirectory(prefix="gateway-node-") as node_dir:
                self._node_dir = Path(node_dir)
                failure = await self._serve(stop)
        finally:
            if embedders is not None:
                await embedders.close()
        if failure is not None:  # last, so it is the line an operator sees
            print(f"gateway: {failure}", file=sys.stderr, flush=True)
            return 1
        return 0

    async def _start_embedders(self) -> EmbedderSupervisor | None:
        """Managed workers, started once for every child; sidecars are left to the children."""
        embedder = self.settings.embedder
        if embedder is None or embedder.sidecar:
            return None
        embedders = EmbedderSupervisor(embedder)
        await embedders.start()
        self._sockets = tuple(worker.socket_path for worker in embedders.workers)
        try:  # children started now attach at once instead of backing off while it loads
            await asyncio.wait_for(embedders.pool.wait_live(1), embedder.start_timeout_s)
        except TimeoutError:
            log.warning("no embedding worker ready after %.0f s; starting the gateway "
                        "processes anyway (they degrade until one is)", embedder.start_timeout_s)
        return embedders

    async def _serve(self, stop: asyncio.Event) -> str | None:
        """Run the children until ``stop`` or a failed start (its reason), then stop them."""
        count = self.settings.server.processes
        slots = [asyncio.create_task(self._slot(i), name=f"gateway-process-{i}")
                 for i in range(count)]
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopped, *slots], return_when=asyncio.FIRST_COMPLETED)
        failure = next((t.exception() for t in done if t is not stopped), None)
        for task in [stopped, *slots]:
            task.cancel()
        await asyncio.gather(stopped, *slots, return_exceptions=True)
        codes = await self._stop_children()
        if failure is not None:
            return str(failure)
        log.info("every gateway process has stopped (statuses %s)", codes)
        bad = [code for code in codes if code != 0]
        return f"gateway processes stopped with statuses {bad}" if bad else None

    async def _slot(self, index: int) -> None:
        """Keep child ``index`` running; ChildFailed when its first start fails. A restart
        that fails (the shared database down for a moment, say) is tried again with the same
        backoff: the node's other processes go on serving meanwhile."""
        loop = asyncio.get_running_loop()
        backoff = Backoff(*RESTART_BACKOFF_S)
        process = await self._start(index)
        while True:
            started = loop.time()
            code = await process.wait()
            if process.stdin is not None:
                process.stdin.close()
            delay = backoff.record(loop.time() - started)
            log.warning("gateway process %d (pid %d) exited with status %s; restarting it "
                        "in %.1f s", index, process.pid, code, delay)
            process = await self._restart(index, delay, backoff)

    async def _restart(self, index: int, delay_s: float, backoff: Backoff) -> (
            asyncio.subprocess.Process):
        while True:
            await asyncio.sleep(delay_s)  # the backoff itself, not a wait for an event
            try:
                return await self._start(index)
            except ChildFailed as exc:
                delay_s = backoff.record(0.0)
                log.warning("%s; trying again in %.1f s", exc, delay_s)

    async def _start(self, index: int) -> asyncio.subprocess.Process:
        read_fd, write_fd = os.pipe()
        try:
            argv = self.command(index, write_fd, self._sockets, self._node_dir)
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, pass_fds=(write_fd,), env=child_env())
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.children[index] = process
        reading = asyncio.ensure_future(asyncio.to_thread(_read_line, read_fd))
        try:
            line = await asyncio.wait_for(asyncio.shield(reading), START_TIMEOUT_S)
        except TimeoutError:
            line = f"{FAILED}did not listen within {START_TIMEOUT_S:.0f} s"
        if line == LISTENING:
            log.info("gateway process %d (pid %d) is listening", index, process.pid)
            return process
        if line.startswith(FAILED):
            reason = line.removeprefix(FAILED)
            await _wait(process, STOP_MARGIN_S)  # one that never listened: nothing to drain
        else:
            reason = f"exited with status {await process.wait()} before listening (see its log)"
        raise ChildFailed(f"process {index} of {self.settings.server.processes} could not start: "
                          f"{reason}")

    async def _stop_children(self) -> list[int]:
        """SIGTERM to every child (each drains), then wait; kill one that overstays."""
        children = list(self.children.values())
        for process in children:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        deadline_s = self.settings.server.shutdown_grace_s + STOP_MARGIN_S
        return list(await asyncio.gather(*(_wait(p, deadline_s) for p in children)))


async def _wait(process: asyncio.subprocess.Process, timeout_s: float) -> int:
    try:
        async with asyncio.timeout(timeout_s):
            code = await process.wait()
    except TimeoutError:
        log.warning("gateway process %d did not stop within %.0f s: killed", process.pid,
                    timeout_s)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        code = await process.wait()
    if process.stdin is not None:
        process.stdin.close()
    return code


def _read_line(fd: int) -> str:
    """The child's one line, or "" once it exits without one (blocking: run in a thread)."""
    data = b""
    try:
        while not data.endswith(b"\n"):
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    return data.decode(errors="replace").strip()
