"""``gateway serve`` as a real process: start-up, bad input, and a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ROOT
from tests.fake_openai import FakeOpenAI, Reply
from tests.test_chat_api import sse_payloads


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp_path: Path, upstream_url: str, grace_s: float = 20, extra: str = "",
            embedder: bool = False) -> Path:
    path = tmp_path / "gateway.toml"
    workers = f'model_dir = "{ROOT / "models" / "all-MiniLM-L6-v2"}"' if embedder else (
        "enabled = false")
    tmp_path.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""
[server]
data_dir = "{tmp_path / 'data'}"
shutdown_grace_s = {grace_s}
{extra}
[[providers]]
name = "fake"
kind = "openai"
base_url = "{upstream_url}"
[[models]]
name = "small"
provider = "fake"
tier = "cheap"
[embedder]
{workers}
""")
    return path


async def _first_key(stdout: asyncio.StreamReader) -> str:
    """The tenant key a first start prints once on stdout."""
    for line in await _wait_for_line(stdout, b"API key for tenant 'default'"):
        if b"API key for tenant" in line:
            return line.decode().rsplit(": ", 1)[1].strip()
    raise AssertionError("no key printed")


async def _wait_for_line(stream: asyncio.StreamReader, needle: bytes) -> list[bytes]:
    lines = []
    while True:
        line = await stream.readline()
        if not line:
            raise AssertionError(f"process ended before logging {needle!r}: {lines}")
        lines.append(line)
        if needle in line:
            return lines


Served = tuple[asyncio.subprocess.Process, str, FakeOpenAI, aiohttp.ClientSession]


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, fake_openai: tuple[FakeOpenAI, str], grace_s: float = 20, extra: str = "",
    *, embedder: bool = False, env: dict[str, str] | None = None,
) -> AsyncIterator[Served]:
    """``gateway serve`` as a process on a free port, and a session holding its first key."""
    fake, url = fake_openai
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--config",
        str(_config(tmp_path, url, grace_s, extra, embedder)),
        "--port", str(port), cwd=ROOT, stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**{k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")},
             **(env or {})},
    )
    assert proc.stderr is not None and proc.stdout is not None
    try:
        key = await asyncio.wait_for(_first_key(proc.stdout), timeout=30)
        started = await asyncio.wait_for(_wait_for_line(proc.stderr, b"gateway listening"),
                                         timeout=30)
        assert any(b"providers enabled: fake" in line for line in started)  # the rule, visible
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:
            yield proc, f"http://127.0.0.1:{port}", fake, session
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@pytest.fixture
async def served(tmp_path: Path, fake_openai: tuple[FakeOpenAI, str]) -> AsyncIterator[Served]:
    async with serving(tmp_path, fake_openai) as running:
        yield running


async def test_process_survives_hostile_input(served: Any) -> None:
    proc, base, _, session = served
    bad_content = {"model": "small", "messages": [{"role": "user", "content": {}}]}
    bodies = [b"{", b"\xff\xfe", b"[1,2", b'{"model": null}', b"0" * 100_000,
              json.dumps(bad_content).encode()]
    for body in bodies:
        async with session.post(f"{base}/v1/chat/completions", data=body) as resp:
            assert resp.status == 400
            assert "error" in await resp.json()
    async with aiohttp.ClientSession() as keyless, keyless.post(
            f"{base}/v1/chat/completions", data=bodies[0]) as resp:
        assert resp.status == 401
    async with session.post(f"{base}/v1/chat/completions", json={
            "model": "small", "messages": [{"role": "user", "content": "hi"}]}) as resp:
        assert resp.status == 200
    assert proc.returncode is None


async def test_sigterm_lets_a_stream_in_flight_finish(served: Any) -> None:
    proc, base, fake, session = served
    fake.script.append(Reply(kind="hang", chunks_before_cut=3))
    resp = await session.post(f"{base}/v1/chat/completions", json={
        "model": "small", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    first = await resp.content.readuntil(b"\n\n")
    assert first.startswith(b"data: ")
    proc.send_signal(signal.SIGTERM)
    assert proc.stderr is not None
    await asyncio.wait_for(_wait_for_line(proc.stderr, b"draining"), timeout=30)
    fake.release.set()
    rest = await resp.content.read()
    resp.close()
    assert rest.rstrip().endswith(b"data: [DONE]"), "the stream finished whole"
    assert await asyncio.wait_for(proc.wait(), timeout=30) == 0


async def test_sigterm_keeps_one_deadline_and_cuts_longer_streams_with_the_error_event(
    tmp_path: Path, fake_openai: tuple[FakeOpenAI, str]
) -> None:
    """Streams that outlive the grace end with the in-stream error event (and keep their
    ledger rows); the process, its embedder worker's stop included, exits within the grace
    plus a second."""
    grace_s = 2.0
    async with serving(tmp_path, fake_openai, grace_s, embedder=True) as (
            proc, base, fake, session):
        fake.default = Reply(kind="hang", chunks_before_cut=3)
        body = {"model": "small", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        streams = [await session.post(f"{base}/v1/chat/completions", json=body)
                   for _ in range(2)]
        for resp in streams:
            assert (await resp.content.readuntil(b"\n\n")).startswith(b"data: ")
        loop = asyncio.get_running_loop()
        signalled = loop.time()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), timeout=grace_s + 1)
        assert code == 0, f"exit {code} after {loop.time() - signalled:.1f} s"
        for resp in streams:
            payloads = sse_payloads((await resp.content.read()).decode())
            resp.close()
            assert "[DONE]" not in payloads
            assert json.loads(payloads[-1])["error"]["code"] == "stream_interrupted"
    with sqlite3.connect(tmp_path / "data" / "gateway.sqlite3") as db:
        rows = db.execute("SELECT status FROM usage").fetchall()
    assert rows == [(503,)] * 2


async def test_sigterm_under_load_loses_no_ledger_row(served: Any, tmp_path: Path) -> None:
    proc, base, fake, session = served
    fake.default = Reply(kind="hang")
    body = {"model": "small", "messages": [{"role": "user", "content": "hi"}]}
    calls = [asyncio.ensure_future(session.post(f"{base}/v1/chat/completions", json=body))
             for _ in range(40)]
    await asyncio.wait_for(fake.wait_for_requests(40), timeout=30)
    proc.send_signal(signal.SIGTERM)
    assert proc.stderr is not None
    await asyncio.wait_for(_wait_for_line(proc.stderr, b"draining"), timeout=30)
    fake.release.set()
    responses = await asyncio.gather(*calls)
    completed = sum(1 for r in responses if r.status == 200)
    for r in responses:
        r.release()
    assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
    with sqlite3.connect(tmp_path / "data" / "gateway.sqlite3") as db:
        (rows,) = db.execute("SELECT count(*) FROM usage WHERE status = 200").fetchone()
    assert completed == 40 and rows == completed


async def test_a_sigkilled_gateways_embedder_directory_is_removed_by_the_next_start(
    tmp_path: Path, fake_openai: tuple[FakeOpenAI, str]
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"TMPDIR": str(temp)}
    async with serving(tmp_path / "first", fake_openai, embedder=True, env=env) as (proc, *_):
        (left,) = temp.glob("embedder-*")
        proc.kill()
        await proc.wait()
    assert left.exists(), "SIGKILL ran no cleanup"
    async with serving(tmp_path / "second", fake_openai, embedder=True, env=env):
        (own,) = temp.glob("embedder-*")
    assert own != left and not left.exists()


async def test_a_start_up_that_fails_part_way_exits_naming_the_error(
    tmp_path: Path, fake_openai: tuple[FakeOpenAI, str]
) -> None:
    """The cache and the routing signals have opened their files before the tenants' store
    fails; everything started is stopped and the process ends with status 1."""
    _, url = fake_openai
    data = tmp_path / "data"
    data.mkdir()
    (data / "gateway.sqlite3").write_bytes(b"not a database " * 64)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--config", str(_config(tmp_path, url)),
        "--port", str(_free_port()), cwd=ROOT, stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 1
    assert b"gateway stopped on an error" in stderr and b"file is not a database" in stderr
    assert b"listening" not in stderr
