"""Several real ``gateway serve`` processes sharing one Redis: for the cluster tests and benches.

``start_replicas`` writes one configuration per replica (its own data folder, the small routes
file below, an embedding worker of its own with the real model) and starts them as
``python -m gateway serve``; each is ready once ``/readyz`` answers 200. Without a shared
database (``[cluster] database_url``, tests/test_replicas_postgres.py) the replicas share one
SQLite file for tenants, keys and the ledger (``tenants.database``, an absolute path): SQLite's
WAL lets several processes use it. Their own watch on the store is slowed to an hour
(``reload_interval_s``, unless ``tenants`` says otherwise), so a change can only reach them
through a notice.
Output goes to a log file per replica (read it with ``Replica.log``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway.core.tenant_settings import Limits
from gateway.tenants.store import Store
from tests.redis_server import free_port
from tests.tenant_fixtures import GATEWAY_ENV, SECRET

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "models" / "all-MiniLM-L6-v2"
READY_TIMEOUT_S = 120.0
ROUTES = """
[[routes]]
name = "greeting"
tier = "cheap"
utterances = ["hi", "hello there", "good morning"]

[[routes]]
name = "code"
tier = "reasoning"
utterances = ["write a python function", "fix the bug in this SQL query"]
"""
"""Few and short: each replica embeds them and trains its router in a moment."""
PRICE_PER_MTOK = 1000.0
"""Every model costs $0.001 a token, so budgets of a dollar are spent in a few hundred tokens."""


@dataclass
class Replica:
    name: str
    port: int
    config: Path
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "serve", "--config", str(self.config),
                "--port", str(self.port), cwd=ROOT, stdout=out, stderr=out, env=self.env,
            )

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert self.process is not None
            if self.process.returncode is not None:
                raise AssertionError(f"{self.name} exited: {self.log()[-3000:]}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{self.url}/readyz") as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready: {self.log()[-3000:]}")
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.process is None:
            return
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def replica_config(folder: Path, *, upstream: str, redis_url: str | None, database: Path,
                   cluster: Mapping[str, Any] | None = None, embedder: bool = True,
                   cache: bool = False, tenants: Mapping[str, Any] | None = None,
                   ledger_flush_s: float = 0.2) -> Path:
    """One replica's TOML: the fake provider, its own data folder, the shared tenants file;
    ``tenants`` overrides keys of ``[tenants]``."""
    routes = folder.parent / "routes.toml"
    if not routes.exists():
        routes.write_text(ROUTES)
    # A test machine shared with other work can starve a replica's event loop for seconds
    # under a burst; a Redis reply read late is not Redis being down, so the deadline is long.
    # (A stopped Redis refuses connections at once: the modes are tested all the same.)
    chosen = {"redis_timeout_ms": 10_000, "redis_connect_timeout_ms": 10_000, **(cluster or {})}
    cluster_lines = "".join(f"{k} = {_toml(v)}\n" for k, v in chosen.items())
    if redis_url is not None:
        cluster_lines = f'redis_url = "{redis_url}"\n' + cluster_lines
    embedder_table = (f'model_dir = "{MODEL_DIR}"\nworkers = 1\nthreads = 1\n' if embedder
                      else "enabled = false\n")
    tenant_keys = {"database": str(database), "bootstrap": False, "reload_interval_s": 3600,
                   **(tenants or {})}
    tenant_lines = "".join(f"{k} = {_toml(v)}\n" for k, v in tenant_keys.items())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "gateway.toml"
    path.write_text(f"""
[server]
data_dir = "{folder / 'data'}"
shutdown_grace_s = 10
[[providers]]
name = "fake"
kind = "openai"
base_url = "{upstream}"
[[models]]
name = "small"
provider = "fake"
tier = "cheap"
input_price_per_mtok = {PRICE_PER_MTOK}
output_price_per_mtok = {PRICE_PER_MTOK}
[[models]]
name = "big"
provider = "fake"
upstream_model = "big"
tier = "reasoning"
input_price_per_mtok = {PRICE_PER_MTOK}
output_price_per_mtok = {PRICE_PER_MTOK}
[embedder]
{embedder_table}
[routing]
routes_file = "{routes}"
[cache]
enabled = {_toml(cache)}
[tenants]
{tenant_lines}[tenants.ledger]
flush_interval_s = {ledger_flush_s}
[observability]
access_log = false
[cluster]
{cluster_lines}""")
    return path


def _toml(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value).lower() \
        if isinstance(value, bool) else str(value)


async def create_tenants(database: Path, tenants: Mapping[str, Limits]) -> dict[str, tuple[str,
                                                                                         str]]:
    """Create each tenant with one key in the shared file: name → (key id, key)."""
    database.parent.mkdir(parents=True, exist_ok=True)
    store = await Store.open(database)
    keys = {}
    try:
        for name, limits in tenants.items():
            await store.create_tenant(name, limits)
            record, key = await store.create_key(SECRET, name, name="test")
            keys[name] = (record.id, key)
    finally:
        await store.close()
    return keys


async def start_replicas(
    tmp_path: Path, count: int, *, upstream: str, redis_url: str | None,
    session: aiohttp.ClientSession, cluster: Mapping[str, Any] | None = None,
    per_replica: Mapping[int, Mapping[str, Any]] | None = None, embedder: bool = True,
    **options: Any,
) -> list[Replica]:
    """``count`` replicas, started together and ready; ``per_replica`` overrides ``[cluster]``
    keys for some of them (by index); ``options`` go to ``replica_config`` (``cache``,
    ``tenants``, ``ledger_flush_s``)."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(GATEWAY_ENV)
    replicas = []
    for i in range(count):
        folder = tmp_path / f"replica{i}"
        settings = {**(cluster or {}), **(per_replica or {}).get(i, {})}
        config = replica_config(folder, upstream=upstream, redis_url=redis_url,
                                database=tmp_path / "shared" / "gateway.sqlite3",
                                cluster=settings, embedder=embedder, **options)
        replicas.append(Replica("ABCDEFGH"[i], free_port(), config, folder / "gateway.log",
                                env=env))
    for replica in replicas:
        await replica.start()
    try:
        for replica in replicas:
            await replica.wait_ready(session)
    except BaseException:
        await stop_all(replicas)
        raise
    return replicas


async def stop_all(replicas: list[Replica]) -> None:
    await asyncio.gather(*(r.stop() for r in replicas))


async def chat(session: aiohttp.ClientSession, replica: Replica, key: str, *,
               model: str = "small", max_tokens: int = 50) -> tuple[int, dict[str, str], Any]:
    """One chat completion: its status, headers and JSON body."""
    async with session.post(
        f"{replica.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "max_tokens": max_tokens,
              "messages": [{"role": "user", "content": "Say hello"}]},
    ) as resp:
        return resp.status, dict(resp.headers), await resp.json(content_type=None)


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` now (its children, theirs...), read from /proc; one that
    exits while it is read is passed over."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        try:
            tasks = list(Path(f"/proc/{todo.pop()}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError):
                children = {int(c) for c in (task / "children").read_text().split()}
                todo += children - found
                found |= children
    return found
