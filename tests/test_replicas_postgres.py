"""Several ``gateway serve`` processes sharing one real PostgreSQL act as one gateway: one
ledger that loses nothing when every replica is stopped under load, one cache whose answers any
replica serves, one set of keys. Only the upstream provider is faked (in this process)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.conftest import ROOT
from tests.fake_openai import FakeOpenAI
from tests.tenant_fixtures import ADMIN_KEY, GATEWAY_ENV, bearer

pytest_plugins = ["tests.postgres_fixtures"]
pytestmark = pytest.mark.timeout(180)

READY_DEADLINE_S = 90.0
VISIBLE_DEADLINE_S = 1.0  # what the design promises for keys and cache entries across replicas
MODEL_DIR = ROOT / "models" / "all-MiniLM-L6-v2"


@dataclass
class Replica:
    process: asyncio.subprocess.Process
    url: str
    log: Path


Fleet = Callable[..., Awaitable[list[Replica]]]


def _config(folder: Path, upstream: str, *, embedder: bool) -> Path:
    path = folder / "gateway.toml"
    embedder_table = (f'model_dir = "{MODEL_DIR}"\nworkers = 1\nthreads = 1' if embedder
                      else "enabled = false")
    path.write_text(f"""
[server]
data_dir = "{folder / 'data'}"
shutdown_grace_s = 20
[[providers]]
name = "fake"
kind = "openai"
base_url = "{upstream}"
[[models]]
name = "small"
provider = "fake"
tier = "cheap"
input_price_per_mtok = 1.0
output_price_per_mtok = 2.0
[embedder]
{embedder_table}
[cache]
enabled = {"true" if embedder else "false"}
[tenants]
bootstrap = false
reload_interval_s = 0.2
[tenants.ledger]
flush_interval_s = 5.0
""")
    return path


async def _ready(session: aiohttp.ClientSession, replica: Replica) -> None:
    deadline = time.monotonic() + READY_DEADLINE_S
    while time.monotonic() < deadline:
        if replica.process.returncode is not None:
            raise AssertionError(f"replica exited: {replica.log.read_text()[-3000:]}")
        try:
            async with session.get(f"{replica.url}/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"replica not ready: {replica.log.read_text()[-3000:]}")


@pytest.fixture
async def fleet(
    tmp_path: Path, database_url: str, fake_openai: tuple[FakeOpenAI, str],
    unused_tcp_port_factory: Callable[[], int],
) -> AsyncIterator[Fleet]:
    _, upstream = fake_openai
    started: list[Replica] = []
    session = aiohttp.ClientSession()
    env = {**{k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")},
           **GATEWAY_ENV, "GATEWAY_DATABASE_URL": database_url}

    async def start(count: int, *, embedder: bool = False) -> list[Replica]:
        replicas = []
        for _ in range(count):
            i = len(started)
            folder = tmp_path / f"replica{i}"
            folder.mkdir()
            port = unused_tcp_port_factory()
            log = folder / "gateway.log"
            with log.open("wb") as out:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "gateway", "serve", "--config",
                    str(_config(folder, upstream, embedder=embedder)), "--port", str(port),
                    cwd=ROOT, env=env, stdout=out, stderr=out,
                )
            replica = Replica(process, f"http://127.0.0.1:{port}", log)
            started.append(replica)
            replicas.append(replica)
        await asyncio.gather(*(_ready(session, r) for r in replicas))
        return replicas

    yield start
    await session.close()
    for replica in started:
        if replica.process.returncode is None:
            replica.process.kill()
        await replica.process.wait()


async def _new_key(session: aiohttp.ClientSession, replica: Replica,
                   tenant: str) -> tuple[str, str]:
    admin = bearer(ADMIN_KEY)
    async with session.post(f"{replica.url}/admin/tenants", headers=admin,
                            json={"name": tenant}) as resp:
        assert resp.status == 201, await resp.text()
    async with session.post(f"{replica.url}/admin/tenants/{tenant}/keys", headers=admin) as resp:
        body = await resp.json()
        return str(body["key"]), str(body["id"])


async def _ask(session: aiohttp.ClientSession, replica: Replica, key: str, text: str,
               **extra: Any) -> aiohttp.ClientResponse:
    async with session.post(f"{replica.url}/v1/chat/completions", headers=bearer(key), json={
            "model": "small", "messages": [{"role": "user", "content": text}], **extra}) as resp:
        await resp.read()
        return resp


async def _until(condition: Callable[[], Awaitable[bool]], deadline_s: float, what: str) -> float:
    start = time.monotonic()
    while not await condition():
        if time.monotonic() - start > deadline_s:
            raise AssertionError(f"not within {deadline_s} s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_every_request_completed_before_sigterm_of_every_replica_is_in_the_ledger(
    fleet: Fleet, database_url: str,
) -> None:
    replicas = await fleet(3)
    async with aiohttp.ClientSession() as session:
        key, _ = await _new_key(session, replicas[0], "acme")
        completed: list[str] = []
        stop = asyncio.Event()

        async def load(worker: int) -> None:
            n = 0
            while not stop.is_set():
                replica = replicas[(worker + n) % len(replicas)]
                n += 1
                try:
                    resp = await _ask(session, replica, key, f"question {worker}-{n}",
                                      stream=n % 2 == 0)
                except aiohttp.ClientError:
                    continue  # refused while draining: never counted as completed
                if resp.status == 200:
                    completed.append(resp.headers["x-request-id"])

        workers = [asyncio.create_task(load(w)) for w in range(12)]
        await _until(lambda: _at_least(completed, 150), 60, "150 requests completed")
        for replica in replicas:  # every replica, under load, with rows still queued
            replica.process.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(*(r.process.wait() for r in replicas))
        stop.set()
        await asyncio.gather(*workers)
    assert codes == [0, 0, 0]
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT request_id, status FROM usage WHERE tenant = 'acme'")
        daily = await conn.fetchval("SELECT sum(requests) FROM usage_daily WHERE tenant = 'acme'")
    finally:
        await conn.close()
    ledger = {r[0] for r in rows}
    assert set(completed) <= ledger, f"{len(set(completed) - ledger)} completed rows missing"
    assert len(rows) == len(ledger) and daily == len(rows)


async def _at_least(items: list[str], count: int) -> bool:
    return len(items) >= count


async def test_an_answer_cached_through_one_replica_is_a_hit_through_another(
    fleet: Fleet, fake_openai: tuple[FakeOpenAI, str],
) -> None:
    fake, _ = fake_openai
    a, _, c = await fleet(3, embedder=True)
    async with aiohttp.ClientSession() as session:
        key, _ = await _new_key(session, a, "acme")
        await _until(lambda: _accepted(session, c, key), VISIBLE_DEADLINE_S, "C knows the key")
        first = await _ask(session, a, key, "How do I reset my password?")
        assert first.status == 200 and first.headers["x-gateway-cache"] == "miss"
        # A writes its entry within its flush interval (0.2 s); C hears of it by NOTIFY.
        await _until(lambda: _cached_entries(session, c, 1), VISIBLE_DEADLINE_S,
                     "A's entry in C's cache")
        resp = await _ask(session, c, key, "How can I reset my password?")
        assert resp.status == 200 and resp.headers["x-gateway-cache"] == "hit"
        assert resp.headers["x-gateway-cache-kind"] == "semantic"
    assert len(fake.requests) == 1


async def _cached_entries(session: aiohttp.ClientSession, replica: Replica, count: int) -> bool:
    async with session.get(f"{replica.url}/admin/cache", headers=bearer(ADMIN_KEY)) as resp:
        assert resp.status == 200
        return int((await resp.json())["entries"]) == count


async def _accepted(session: aiohttp.ClientSession, replica: Replica, key: str) -> bool:
    async with session.get(f"{replica.url}/v1/models", headers=bearer(key)) as resp:
        return resp.status == 200


async def test_a_key_created_or_revoked_through_one_replica_holds_on_the_others(
    fleet: Fleet,
) -> None:
    replicas = await fleet(3)
    async with aiohttp.ClientSession() as session:
        key, key_id = await _new_key(session, replicas[0], "acme")
        for replica in replicas[1:]:
            await _until(lambda r=replica: _accepted(session, r, key), VISIBLE_DEADLINE_S,
                         f"{replica.url} accepts the new key")
        async with session.delete(f"{replicas[1].url}/admin/keys/{key_id}",
                                  headers=bearer(ADMIN_KEY)) as resp:
            assert resp.status == 200
        for replica in (replicas[0], replicas[2]):
            await _until(lambda r=replica: _refused(session, r, key), VISIBLE_DEADLINE_S,
                         f"{replica.url} refuses the revoked key")


async def _refused(session: aiohttp.ClientSession, replica: Replica, key: str) -> bool:
    return not await _accepted(session, replica, key)
