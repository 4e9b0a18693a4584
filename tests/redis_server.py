"""A real ``redis-server`` for the tests: on a free port, in a temp dir, without persistence.

Tests ask for the ``redis_server`` fixture (tests/conftest.py; one server per test).
``RedisServer.stop``/``start`` stop and restart the same server on the same port (for the tests
of Redis going away). Without the ``redis-server`` binary a test is skipped on a developer's
machine, and fails under CI (``CI=true``), where ``make test`` installs it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.services import missing

START_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_binary() -> str:
    """The path of ``redis-server``; skips (or fails under CI) when there is none."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        missing("redis-server is not installed (deploy/install_services.sh installs it)")
    return found


class RedisServer:
    """One ``redis-server`` process; ``url`` stays the same across ``stop`` and ``start``."""

    def __init__(self, binary: str, folder: Path, port: int) -> None:
        self.binary, self.folder, self.port = binary, folder, port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.folder), "--save", "", "--appendonly", "no", "--daemonize", "no",
             "--logfile", str(self.folder / "redis.log"), "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.folder / "redis.log")
                raise RuntimeError("redis-server did not start: "
                                   + (log.read_text()[-2000:] if log.exists() else "no log"))
            time.sleep(0.01)  # polling for the port with a deadline, not waiting for an outcome

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None
