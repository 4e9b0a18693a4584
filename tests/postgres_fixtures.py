"""A real PostgreSQL for the tests: Debian's server binaries, started once per test session on a
free port in a temporary folder, and a fresh database for each test that asks for one.

Test modules load this with ``pytest_plugins = ["tests.postgres_fixtures"]``; benchmarks use
``running_postgres`` directly. initdb refuses to
run as root, so as root the server runs as the ``postgres`` user (which Debian's package creates)
in a folder handed to that user. Without the binaries the tests skip, except under CI
(``CI=true``), where they fail: ``make test`` installs the package (deploy/install_services.sh).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from gateway.core.cluster import ClusterSettings
from gateway.core.postgres import Database
from tests.services import missing

_START_TIMEOUT_S = 30.0
_DATABASES = itertools.count(1)


@dataclass(frozen=True)
class PostgresServer:
    port: int
    folder: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


def postgres_bin() -> Path | None:
    """The newest installed server's bin folder (Debian keeps one per major version)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    return ["runuser", "-u", "postgres", "--", *args]


def _wait_ready(bin_dir: Path, port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"postgres exited with {server.returncode} while starting")
        ready = subprocess.run(
            [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)],
            check=False,
        )
        if ready.returncode == 0:
            return
    raise RuntimeError(f"postgres did not accept connections within {_START_TIMEOUT_S} s")


@contextlib.contextmanager
def running_postgres(*, durable: bool = False) -> Iterator[PostgresServer]:
    """A server in a fresh temporary folder for the duration of the block. ``durable`` keeps
    PostgreSQL's fsync on (benchmarks); tests run without it."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        missing("PostgreSQL server binaries are not installed (/usr/lib/postgresql/*/bin)")
    # Not under pytest's own temp folder: that one is private to root, the server is not root.
    folder = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
    data = folder / "data"
    subprocess.run(
        _as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                         "--auth=trust", "--no-sync", "-E", "UTF8"]),
        check=True, stdout=subprocess.DEVNULL,
    )
    port = _free_port()
    options = ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"]
    if not durable:
        options += ["-c", "fsync=off"]
    with (folder / "server.log").open("wb") as server_log:
        server = subprocess.Popen(
            _as_server_user([str(bin_dir / "postgres"), "-D", str(data), "-p", str(port),
                             "-k", str(folder), *options]),
            stdout=subprocess.DEVNULL, stderr=server_log,
        )
    try:
        _wait_ready(bin_dir, port, server)
        yield PostgresServer(port, folder)
    finally:
        server.terminate()  # SIGTERM: postgres's "smart" shutdown
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


async def create_database(server: PostgresServer, name: str) -> str:
    """A new empty database on ``server``; its URL."""
    admin = await asyncpg.connect(server.url())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return server.url(name)


@pytest.fixture
async def database_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """The URL of an empty database of its own for one test, dropped after it."""
    name = f"test_{os.getpid()}_{next(_DATABASES)}"
    yield await create_database(postgres_server, name)
    admin = await asyncpg.connect(postgres_server.url())
    try:
        with contextlib.suppress(asyncpg.PostgresError):
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """The gateway's pool on a fresh, migrated database."""
    db = await Database.open(ClusterSettings(database_url=database_url, database_pool_size=4))
    try:
        yield db
    finally:
        await db.close()
