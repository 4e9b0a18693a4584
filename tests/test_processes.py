"""``gateway serve --processes 2``: one supervisor, two real gateway processes on one port
(SO_REUSEPORT), real Redis and PostgreSQL between them, the supervisor's own embedding worker
with the real model. Only the provider is faked (in this process).

Which process answered is read from ``/healthz`` (its pid, with several processes) asked on the
same kept-alive connection. Every exchange goes on a fresh connection, so the kernel picks a
process for each.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families

from gateway.core.config import Settings, load
from gateway.core.processes import ChildLink, child_settings, processes_problem
from gateway.tenants.response_store import FILE_NAME
from tests.fake_openai import FakeOpenAI
from tests.redis_server import RedisServer, free_port
from tests.replicas import ROOT, descendants, replica_config
from tests.tasks import until
from tests.tenant_fixtures import ADMIN_KEY, GATEWAY_ENV, bearer

pytest_plugins = ["tests.postgres_fixtures"]
pytestmark = pytest.mark.timeout(240)

WAIT_S = 60.0
"""A deadline for what must happen on a loaded machine; nothing here is timed."""


@dataclass
class Node:
    """A running ``gateway serve --processes N`` and what it printed."""

    process: asyncio.subprocess.Process
    url: str
    out: Path
    err: Path

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")


async def _start(config: Path, port: int, folder: Path, *args: str) -> Node:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(GATEWAY_ENV)
    out, err = folder / "stdout.txt", folder / "stderr.txt"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port",
            str(port), *args, cwd=ROOT, stdout=stdout, stderr=stderr, env=env)
    return Node(process, f"http://127.0.0.1:{port}", out, err)


async def _stop(node: Node) -> int:
    if node.process.returncode is None:
        node.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(node.process.wait(), WAIT_S)
        except TimeoutError:
            node.process.kill()
    return await node.process.wait()


async def _get(url: str, session: aiohttp.ClientSession | None = None,
               **kwargs: Any) -> tuple[int, CIMultiDict[str], Any]:
    """One request, on a connection of its own unless ``session`` is given: status, headers,
    JSON body."""
    method = "POST" if "json" in kwargs else "GET"
    async with contextlib.AsyncExitStack() as stack:
        if session is None:
            session = await stack.enter_async_context(
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)))
        async with session.request(method, url, **kwargs) as resp:
            return resp.status, CIMultiDict(resp.headers), await resp.json(content_type=None)


async def _ready(node: Node) -> None:
    async def ready() -> bool:
        assert node.process.returncode is None, node.stderr()[-3000:]
        with contextlib.suppress(aiohttp.ClientError):
            return (await _get(f"{node.url}/readyz"))[0] == 200
        return False
    await until(ready, "the node answers /readyz", WAIT_S)


async def _pids(node: Node, count: int) -> set[int]:
    """The pids of ``count`` distinct processes answering /healthz on the port."""
    seen: set[int] = set()

    async def all_seen() -> bool:
        status, _, body = await _get(f"{node.url}/healthz")
        assert status == 200
        seen.add(int(body["pid"]))
        return len(seen) >= count
    await until(all_seen, f"{count} processes answer on one port", WAIT_S)
    return seen


@pytest.fixture
async def node_config(
    tmp_path: Path, redis_server: RedisServer, database_url: str,
    fake_openai: tuple[FakeOpenAI, str],
) -> Path:
    _, upstream = fake_openai
    return replica_config(tmp_path / "node", upstream=upstream, redis_url=redis_server.url,
                          database=tmp_path / "unused.sqlite3", embedder=True,
                          cluster={"database_url": database_url},
                          tenants={"bootstrap": True})


@pytest.fixture
async def node(tmp_path: Path, node_config: Path) -> AsyncIterator[Node]:
    started = await _start(node_config, free_port(), tmp_path, "--processes", "2")
    try:
        await _ready(started)
        yield started
    finally:
        await _stop(started)


async def _new_key(node: Node, tenant: str, limits: dict[str, int]) -> tuple[str, int]:
    """A tenant and key made through the admin API on one kept-alive connection; the key and
    the pid of the process that made it (its /healthz on that connection)."""
    admin = bearer(ADMIN_KEY)
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        _, _, health = await _get(f"{node.url}/healthz", session)
        status, _, body = await _get(f"{node.url}/admin/tenants", session, headers=admin,
                                     json={"name": tenant, "limits": limits})
        assert status == 201, body
        status, _, body = await _get(f"{node.url}/admin/tenants/{tenant}/keys", session,
                                     headers=admin, json={})
        assert status == 201, body
        _, _, again = await _get(f"{node.url}/healthz", session)
    assert health["pid"] == again["pid"], "the connection was not kept alive"
    key = str(body["key"])
    known: set[int] = set()

    async def known_everywhere() -> bool:  # the other process hears of it by a Redis notice
        status, _, pid = await _call(node, "/v1/models", key)
        if status == 200:
            known.add(pid)
        return len(known) == 2
    await until(known_everywhere, "every process knows the new key", WAIT_S)
    return key, int(health["pid"])


async def _call(node: Node, path: str, key: str, **kwargs: Any) -> tuple[int, Any, int]:
    """One call on a connection of its own, then /healthz on it: status, body and the pid of
    the process that answered."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        status, _, body = await _get(f"{node.url}{path}", session, headers=bearer(key),
                                     **kwargs)
        _, _, health = await _get(f"{node.url}/healthz", session)
    return status, body, int(health["pid"])


async def _chat(node: Node, key: str) -> tuple[int, int]:
    status, _, pid = await _call(node, "/v1/chat/completions", key, json={
        "model": "small", "messages": [{"role": "user", "content": "Say hello"}]})
    return status, pid


async def test_two_processes_answer_on_one_port_and_the_first_key_is_printed_once(
    node: Node,
) -> None:
    pids = await _pids(node, 2)
    assert node.process.pid not in pids
    assert node.stdout().count("API key for tenant 'default'") == 1


async def test_a_key_created_through_one_process_works_through_the_other(node: Node) -> None:
    key, maker = await _new_key(node, "acme", {})  # known to both processes by then
    answered: dict[int, int] = {}

    async def other_answered() -> bool:
        status, process = await _chat(node, key)
        answered[process] = status
        return any(p != maker for p in answered)
    await until(other_answered, "a process other than the key's maker answers", WAIT_S)
    assert set(answered.values()) == {200}, answered


async def test_responses_stored_by_each_process_are_read_by_the_other_from_one_sqlite_file(
    node: Node,
) -> None:
    key, _ = await _new_key(node, "talker", {})
    writers: dict[str, int] = {}

    async def store_one() -> None:
        status, body, pid = await _call(node, "/v1/responses", key,
                                        json={"model": "small", "input": "Say hello"})
        assert status == 200, body
        writers[body["id"]] = pid

    async def both_wrote() -> bool:  # written side by side: the file's writers overlap
        await asyncio.gather(*(store_one() for _ in range(4)))
        return len(set(writers.values())) == 2
    await until(both_wrote, "both processes stored responses", WAIT_S)
    for response_id, writer in writers.items():
        async def read_by_other(response_id: str = response_id, writer: int = writer) -> bool:
            status, body, pid = await _call(node, f"/v1/responses/{response_id}", key)
            assert status == 200, body
            assert body["id"] == response_id
            return pid != writer
        await until(read_by_other, f"{response_id} is read by the other process", WAIT_S)


async def test_the_rate_limit_is_not_multiplied_by_the_processes(node: Node) -> None:
    key, _ = await _new_key(node, "limited", {"requests_per_minute": 4})
    statuses: list[int] = []
    processes: set[int] = set()

    async def both_processes_asked_often() -> bool:
        status, process = await _chat(node, key)
        statuses.append(status)
        processes.add(process)
        return len(processes) == 2 and len(statuses) >= 10
    await until(both_processes_asked_often, "both processes were asked", WAIT_S)
    assert statuses.count(200) == 4, statuses
    assert set(statuses) == {200, 429}


async def test_a_killed_process_is_restarted_and_the_port_keeps_answering(node: Node) -> None:
    before = await _pids(node, 2)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    answered: set[int] = set()

    async def replaced() -> bool:
        status, _, body = await _get(f"{node.url}/healthz")
        assert status == 200
        answered.add(int(body["pid"]))
        return bool(answered - before)
    await until(replaced, "a new process answers in place of the killed one", WAIT_S)
    assert victim not in answered
    assert "exited with status -9; restarting it" in node.stderr()


async def test_a_restart_that_fails_is_tried_again_while_the_other_process_serves(
    node: Node, node_config: Path,
) -> None:
    before = await _pids(node, 2)
    # Only a starting process opens the Responses store by its name: a folder in its place
    # fails the restart alone, while the running process keeps the file it has open.
    store = node_config.parent / "data" / FILE_NAME
    kept = store.with_name("kept.sqlite3")
    store.rename(kept)
    store.mkdir()
    os.kill(min(before), signal.SIGKILL)

    def tried_again() -> bool:
        assert node.process.returncode is None, node.stderr()[-3000:]
        return "could not start" in node.stderr() and "trying again in" in node.stderr()
    await until(tried_again, "the supervisor retries the failed restart", WAIT_S)
    status, _, body = await _get(f"{node.url}/healthz")
    assert status == 200 and int(body["pid"]) == max(before)

    store.rmdir()
    kept.rename(store)
    assert len(await _pids(node, 2) - before) == 1  # the retry succeeded in its place
    assert node.process.returncode is None


async def test_sigterm_stops_every_process_and_the_supervisor_exits_0(node: Node) -> None:
    pids = await _pids(node, 2)
    assert await _stop(node) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_processes_above_one_without_redis_and_postgres_are_refused(
    tmp_path: Path, fake_openai: tuple[FakeOpenAI, str],
) -> None:
    _, upstream = fake_openai
    config = replica_config(tmp_path / "alone", upstream=upstream, redis_url=None,
                            database=tmp_path / "gateway.sqlite3", embedder=False)
    node = await _start(config, free_port(), tmp_path, "--processes", "2")
    assert await node.process.wait() == 1
    assert "server.processes = 2 needs [cluster] redis_url and database_url" in node.stderr()
    assert "GATEWAY_REDIS_URL" in node.stderr()


async def test_a_process_that_cannot_start_ends_the_supervisor_with_its_reason(
    tmp_path: Path, node_config: Path,
) -> None:
    # Only the processes open the Responses store: a folder in its place fails them alone.
    (node_config.parent / "data" / FILE_NAME).mkdir(parents=True)
    node = await _start(node_config, free_port(), tmp_path, "--processes", "2")
    assert await asyncio.wait_for(node.process.wait(), WAIT_S) == 1
    last = node.stderr().strip().splitlines()[-1]
    assert last.startswith("gateway: process "), last
    assert "could not start: OperationalError: unable to open database file" in last


async def test_a_scrape_on_the_shared_port_reports_every_process_of_the_node(node: Node) -> None:
    await _pids(node, 2)  # both listen (and so serve their sockets to each other)
    for _ in range(4):  # whichever process the kernel picks
        connector = aiohttp.TCPConnector(force_close=True)
        async with (aiohttp.ClientSession(connector=connector) as session,
                    session.get(f"{node.url}/metrics") as resp):
            assert resp.status == 200
            text = await resp.text()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        processes = {s.labels.get("process") for f in families.values() for s in f.samples}
        assert processes == {"0", "1", None}, processes  # None: the scrape's own count
        assert families["gateway_node_processes_scraped"].samples[0].value == 2


def _settings(tmp_path: Path, *, cluster: bool = True, extra: str = "") -> Settings:
    config = replica_config(tmp_path / "cfg", upstream="http://127.0.0.1:9/v1",
                            redis_url="redis://127.0.0.1:9/0" if cluster else None,
                            database=tmp_path / "gateway.sqlite3", embedder=True,
                            cluster={"database_url": "postgresql://db@127.0.0.1:9/gw"}
                            if cluster else None)
    config.write_text(config.read_text() + extra)
    settings = load(config, env={})
    return replace(settings, server=replace(settings.server, processes=2))


def test_one_process_needs_no_cluster_and_two_with_redis_and_postgres_are_accepted(
    tmp_path: Path,
) -> None:
    alone = _settings(tmp_path, cluster=False)
    assert processes_problem(replace(alone, server=replace(alone.server, processes=1))) is None
    assert processes_problem(_settings(tmp_path)) is None


def test_the_refusal_names_only_what_is_missing_and_its_own_variable(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    no_db = replace(settings, cluster=replace(settings.cluster, database_url=None,
                                              database_url_env="ACME_PG_URL"))
    problem = processes_problem(no_db)
    assert problem is not None and "(database_url missing: set ACME_PG_URL)" in problem
    assert "REDIS" not in problem
    no_redis = replace(settings, cluster=replace(settings.cluster, redis_url=None))
    problem = processes_problem(no_redis)
    assert problem is not None and "(redis_url missing: set GATEWAY_REDIS_URL)" in problem
    assert "DATABASE" not in problem


def test_several_processes_with_a_learner_each_are_refused(tmp_path: Path) -> None:
    problem = processes_problem(_settings(tmp_path, extra="[routing.learning]\nenabled = true\n"))
    assert problem is not None and "[routing.learning] enabled" in problem


def test_several_processes_on_port_0_are_refused(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    problem = processes_problem(replace(settings, server=replace(settings.server, port=0)))
    assert problem is not None and "--port N" in problem


def test_each_process_embeds_over_the_supervisor_s_sockets_and_keeps_its_own_graphs(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    sockets = [tmp_path / "worker-0.sock"]
    child = child_settings(settings, 1, sockets, tmp_path / "node")
    assert child.server.processes == 1 and child.server.process_index == 1
    assert child.embedder is not None and child.embedder.sockets == tuple(sockets)
    assert child.cache.index_dir == settings.cache.index_dir / "process-1"
    assert child.server.node_dir == tmp_path / "node"


async def test_a_shared_database_that_cannot_be_reached_ends_the_start_with_one_line(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)  # its PostgreSQL and Redis are on port 9: nothing listens
    assert settings.server.processes == 2
    node = await _start(tmp_path / "cfg" / "gateway.toml", free_port(), tmp_path,
                        "--processes", "2")
    assert await asyncio.wait_for(node.process.wait(), WAIT_S) == 1
    last = node.stderr().strip().splitlines()[-1]
    assert last.startswith("gateway: start-up failed: cannot connect to the shared database")


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for whoever adopted it to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_processes_and_workers_whose_supervisor_was_killed_outright_exit(
    node: Node,
) -> None:
    pids = await _pids(node, 2)
    started = descendants(node.process.pid)
    assert pids < started, (pids, started)  # and the supervisor's embedding worker
    node.process.kill()
    await node.process.wait()
    await until(lambda: not any(_running(pid) for pid in started),
                "every process and worker exits once its supervisor is gone", WAIT_S)


def test_a_child_s_failure_reads_to_the_supervisor_with_its_secrets_masked() -> None:
    read_fd, write_fd = os.pipe()
    ChildLink(write_fd, secrets=["hunter2-db-password"]).failed(
        "cannot connect to postgresql://gw:hunter2-db-password@db/gw with gw-abcdefgh12345678")
    with os.fdopen(read_fd) as pipe:
        line = pipe.read()
    assert "hunter2" not in line and "gw-abcdefgh" not in line, line
    assert line.startswith("failed cannot connect to postgresql://gw:"), line
