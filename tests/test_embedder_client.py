"""embedder_worker.client and supervisor: the pool over real worker subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from embedder_worker import protocol
from embedder_worker.client import (
    EmbedderPool,
    EmbedderUnavailable,
    WorkerConnection,
)
from embedder_worker.model import OnnxEmbedder
from embedder_worker.protocol import ErrorCode, FrameType
from embedder_worker.settings import EmbedderSettings
from embedder_worker.supervisor import EmbedderSupervisor
from tests.tasks import started

if TYPE_CHECKING:
    from tests.embedder_fixtures import Reference, StartWorker, WorkerProcess

pytest_plugins = ["tests.embedder_fixtures"]
pytestmark = pytest.mark.timeout(40)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def fake_worker(path: Path, handler: Handler) -> AsyncIterator[None]:
    """A scripted worker on ``path``; on exit, waits for its connections to end (the client
    side must have closed them), so no socket outlives the test."""
    tasks: set[asyncio.Task[Any]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_unix_server(serve, str(path))
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()
        if tasks:
            await asyncio.wait(tasks)


@contextlib.asynccontextmanager
async def supervised(settings: EmbedderSettings) -> AsyncIterator[EmbedderSupervisor]:
    supervisor = EmbedderSupervisor(settings)
    await supervisor.start()
    try:
        yield supervisor
    finally:
        await supervisor.close()


def managed(model_dir: Path, sock_dir: Path, **overrides: object) -> EmbedderSettings:
    options: dict[str, object] = {
        "workers": 2, "run_dir": sock_dir, "restart_backoff_s": 0.01, "restart_backoff_max_s": 0.1,
        "call_timeout_ms": 20_000.0, **overrides,
    }  # fmt: skip
    return EmbedderSettings(model_dir=model_dir, **options)  # type: ignore[arg-type]


async def test_a_pool_without_workers_is_not_ready_and_fails_fast() -> None:
    pool = EmbedderPool()
    assert not pool.ready
    assert pool.info is None
    with pytest.raises(EmbedderUnavailable):
        await pool.embed(["anything"])


async def test_supervisor_is_not_ready_at_start_then_ready_with_the_model_info(
    model_dir: Path, sock_dir: Path, reference: Reference
) -> None:
    async with supervised(managed(model_dir, sock_dir)) as supervisor:
        pool = supervisor.pool
        assert not pool.ready, "start() must not wait for the workers"
        await pool.wait_live(2)
        assert pool.ready
        assert pool.info is not None
        assert (pool.info.name, pool.info.dim) == ("all-MiniLM-L6-v2", 384)
        result = await pool.embed_with_usage(reference.sentences)
        assert np.abs(result.vectors - reference.embeddings).max() <= 1e-5
        assert result.prompt_tokens == sum(result.token_counts) > 60
        pids = supervisor.pids()
    assert all(pid is not None for pid in pids)
    assert not pool.ready


def test_settings_reject_zero_lanes_naming_the_key(model_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"embedder\.lanes"):
        EmbedderSettings(model_dir=model_dir, lanes=0).validate()


async def test_the_supervisor_starts_workers_with_its_threads_and_lanes(
    model_dir: Path, sock_dir: Path
) -> None:
    settings = managed(model_dir, sock_dir, workers=1, threads=1, lanes=3)
    async with supervised(settings) as supervisor:
        await supervisor.pool.wait_live(1)
        stats = await supervisor.pool.connections[0].stats()
    assert (stats["threads"], stats["lanes"]) == (1, 3)


async def test_many_concurrent_callers_each_get_their_own_vector(
    model_dir: Path, sock_dir: Path, reference: Reference, embedder: OnnxEmbedder
) -> None:
    texts = [f"{sentence} #{i}" for i, sentence in enumerate(reference.sentences[:40] * 3)]
    async with supervised(managed(model_dir, sock_dir)) as supervisor:
        await supervisor.pool.wait_live(2)
        vectors = await asyncio.gather(*(supervisor.pool.embed_one(t) for t in texts))
    assert np.abs(np.stack(vectors) - embedder.embed(texts)).max() <= 1e-5


async def test_a_worker_killed_under_load_loses_no_request_and_comes_back(
    model_dir: Path, sock_dir: Path, embedder: OnnxEmbedder, reference: Reference
) -> None:
    texts = [f"{sentence} ~{i}" for i, sentence in enumerate(reference.sentences[:30] * 3)]
    async with supervised(managed(model_dir, sock_dir)) as supervisor:
        pool = supervisor.pool
        await pool.wait_live(2)
        victim = supervisor.pids()[0]
        assert victim is not None
        calls = await started([pool.embed([t]) for t in texts])  # every frame sent
        assert sum(conn.in_flight for conn in pool.connections) == len(texts)
        os.kill(victim, signal.SIGKILL)
        vectors = np.concatenate(await asyncio.gather(*calls))
        assert np.abs(vectors - embedder.embed(texts)).max() <= 1e-5
        await pool.wait_live(2)
        assert supervisor.pids()[0] not in (None, victim)
        again = await pool.embed_one("back again")
        assert np.abs(again - embedder.embed(["back again"])[0]).max() <= 1e-5


async def test_repeats_are_answered_from_the_lru_without_a_worker(worker: WorkerProcess) -> None:
    pool = EmbedderPool(lru_size=8)
    await pool.attach(worker.socket)
    first = await pool.embed(["remember me", "and me"])
    await pool.close()
    assert not pool.ready
    again = await pool.embed(["and me", "remember me", "and me"])
    assert np.array_equal(again, first[[1, 0, 1]])
    with pytest.raises(EmbedderUnavailable):
        await pool.embed(["never seen"])


async def test_one_texts_vector_is_read_only_so_no_caller_changes_what_the_lru_shares(
    worker: WorkerProcess, embedder: OnnxEmbedder
) -> None:
    pool = EmbedderPool(lru_size=8)
    await pool.attach(worker.socket)
    first = await pool.embed_one("shared row")
    with pytest.raises(ValueError):
        first[0] = 42.0  # the LRU's own row: a write would change every later caller's vector
    batch = await pool.embed(["shared row"])
    batch[0, 0] = 42.0  # a batch is the caller's own copy
    await pool.close()
    again = await pool.embed_one("shared row")  # from the LRU, no worker left
    assert again is first and again.dtype == np.float32 and again.flags.c_contiguous
    assert np.abs(again - embedder.embed(["shared row"])[0]).max() <= 1e-5
    with pytest.raises(EmbedderUnavailable):
        await pool.embed_one("never seen")


async def test_a_cancelled_caller_leaves_the_connection_usable(
    worker: WorkerProcess, embedder: OnnxEmbedder, reference: Reference
) -> None:
    conn = await WorkerConnection.open(worker.socket)
    try:
        (call,) = await started([conn.embed(reference.sentences)])  # the reply is pending
        assert conn.in_flight == 60
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert conn.in_flight == 0
        result = await conn.embed(["still fine"])
        assert np.abs(result.vectors - embedder.embed(["still fine"])).max() <= 1e-5
        assert conn.is_open
    finally:
        await conn.close()


async def _mute_worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers INFO and the warm-up EMBED, then never answers again."""
    answered_embed = False
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            frame = await protocol.read_frame(reader)
            if frame.type is FrameType.INFO:
                info = {"name": "mute", "dim": 2, "max_length": 8, "pooling": "mean",
                        "normalize": True}  # fmt: skip
                writer.write(protocol.encode_info(frame.request_id, info))
            elif frame.type is FrameType.EMBED and not answered_embed:
                answered_embed = True
                vectors = np.zeros((frame.count, 2), dtype=np.float32)
                writer.write(protocol.encode_result(frame.request_id, vectors, [1] * frame.count))


async def test_a_call_nobody_answers_fails_with_unavailable_after_its_timeout(
    sock_dir: Path,
) -> None:
    path = sock_dir / "mute.sock"
    async with fake_worker(path, _mute_worker):
        pool = EmbedderPool(call_timeout_ms=50)
        try:
            await pool.attach(path)
            with pytest.raises(EmbedderUnavailable, match="50 ms"):
                await pool.embed(["hello?"])
            with pytest.raises(EmbedderUnavailable, match="50 ms"):  # auto's one-text call
                await pool.embed_one("hello again?")
            assert pool.ready, "a slow answer is not a dead worker"
        finally:
            await pool.close()


async def test_sidecar_mode_reconnects_when_the_worker_comes_back(
    model_dir: Path, sock_dir: Path, worker_factory: StartWorker
) -> None:
    socket = sock_dir / "side.sock"
    settings = EmbedderSettings(
        model_dir=model_dir, sockets=(socket,), restart_backoff_s=0.01, restart_backoff_max_s=0.05
    )
    first = await worker_factory(socket)
    async with supervised(settings) as supervisor:
        pool = supervisor.pool
        await pool.wait_live(1)
        (old,) = pool.connections
        await first.stop()
        await old.wait_closed()
        assert not pool.ready
        await worker_factory(socket)
        await pool.wait_live(1)
        assert pool.connections[0] is not old
        assert (await pool.embed_one("hello again")).shape == (384,)


async def _draining_worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers INFO and the warm-up EMBED, then refuses every EMBED with SHUTTING_DOWN."""
    warmed_up = False
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            frame = await protocol.read_frame(reader)
            if frame.type is FrameType.INFO:
                info = {"name": "all-MiniLM-L6-v2", "dim": 384, "max_length": 256,
                        "pooling": "mean", "normalize": True}  # fmt: skip
                writer.write(protocol.encode_info(frame.request_id, info))
            elif not warmed_up:
                warmed_up = True
                vectors = np.zeros((frame.count, 384), dtype=np.float32)
                writer.write(protocol.encode_result(frame.request_id, vectors, [1] * frame.count))
            else:
                error = protocol.encode_error(frame.request_id, ErrorCode.SHUTTING_DOWN, "bye")
                writer.write(error)


async def test_a_draining_worker_gets_no_new_work_and_calls_go_elsewhere(
    worker: WorkerProcess, sock_dir: Path, embedder: OnnxEmbedder
) -> None:
    path = sock_dir / "draining.sock"
    async with fake_worker(path, _draining_worker):
        pool = EmbedderPool()
        try:
            draining = await pool.attach(path)  # first attached: the first one picked
            await pool.attach(worker.socket)
            vector = await pool.embed_one("route me elsewhere")
            assert np.abs(vector - embedder.embed(["route me elsewhere"])[0]).max() <= 1e-5
            assert draining.draining
            assert draining not in pool.connections
            assert pool.ready
        finally:
            await pool.close()
