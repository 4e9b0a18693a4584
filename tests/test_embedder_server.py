"""embedder_worker.server and __main__: a real worker subprocess on a real Unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pytest

from embedder_worker import protocol
from embedder_worker.client import WorkerConnection
from embedder_worker.model import OnnxEmbedder
from embedder_worker.protocol import ErrorCode, Frame, FrameType
from tests.fuzzing import fuzz_rng

if TYPE_CHECKING:
    from tests.embedder_fixtures import Reference, WorkerProcess

pytest_plugins = ["tests.embedder_fixtures"]
pytestmark = pytest.mark.timeout(30)


class RawClient:
    """Bytes in, frames out: for frames a well-behaved client would never send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def frame(self) -> Frame:
        return await protocol.read_frame(self.reader)

    async def at_eof(self) -> bool:
        return await self.reader.read() == b""


@contextlib.asynccontextmanager
async def raw_client(path: Path) -> AsyncIterator[RawClient]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        yield RawClient(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def connection(path: Path) -> AsyncIterator[WorkerConnection]:
    conn = await WorkerConnection.open(path)
    try:
        yield conn
    finally:
        await conn.close()


async def test_socket_exists_and_reports_its_model_once_ready(worker: WorkerProcess) -> None:
    assert worker.socket.is_socket()
    async with connection(worker.socket) as conn:
        assert conn.info is not None
        assert (conn.info.name, conn.info.dim, conn.info.max_length) == (
            "all-MiniLM-L6-v2",
            384,
            256,
        )
        assert conn.info.pid == worker.process.pid
        await conn.ping()


async def test_vectors_over_the_socket_match_the_reference(
    worker: WorkerProcess, reference: Reference
) -> None:
    async with connection(worker.socket) as conn:
        result = await conn.embed(reference.sentences)
    assert np.abs(result.vectors - reference.embeddings).max() <= 1e-5
    assert max(result.token_counts) == 256
    assert min(result.token_counts) >= 2


async def test_concurrent_requests_are_batched_and_each_gets_its_own_vector(
    worker: WorkerProcess, reference: Reference, embedder: OnnxEmbedder
) -> None:
    texts = [f"{sentence} ({i})" for i, sentence in enumerate(reference.sentences[:50] * 2)]
    async with connection(worker.socket) as conn:
        results = await asyncio.gather(*(conn.embed([text]) for text in texts))
        stats = protocol.decode_info(await conn._info_frame())
    got = np.concatenate([r.vectors for r in results])
    assert np.abs(got - embedder.embed(texts)).max() <= 1e-5
    assert isinstance(stats["batches"], int)
    assert stats["batches"] < len(texts), "concurrent requests were run one by one"


async def test_unknown_frame_type_and_bad_embed_get_errors_and_the_connection_lives(
    worker: WorkerProcess,
) -> None:
    async with raw_client(worker.socket) as client:
        await client.send(protocol.HEADER.pack(protocol.MAGIC, protocol.VERSION, 77, 11, 0, 2))
        await client.send(b"zz")
        bad_lengths = protocol.encode_frame(FrameType.EMBED, 12, 2, b"\x05\x00\x00\x00abc")
        await client.send(bad_lengths)
        await client.send(protocol.encode_frame(FrameType.RESULT, 13))
        await client.send(protocol.encode_frame(FrameType.PING, 14))
        replies = [await client.frame() for _ in range(4)]
    assert [(f.type, f.request_id) for f in replies] == [
        (FrameType.ERROR, 11), (FrameType.ERROR, 12), (FrameType.ERROR, 13), (FrameType.PONG, 14),
    ]  # fmt: skip
    assert {protocol.decode_error(f)[0] for f in replies[:3]} == {ErrorCode.BAD_REQUEST}


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # not our protocol at all
        protocol.HEADER.pack(protocol.MAGIC, protocol.VERSION, 1, 1, 1, 1 << 30),  # too large
    ],
)
async def test_lost_framing_gets_an_error_then_close_and_the_worker_lives(
    worker: WorkerProcess, garbage: bytes
) -> None:
    async with raw_client(worker.socket) as client:
        await client.send(garbage)
        error = await client.frame()
        assert (error.type, error.request_id) == (FrameType.ERROR, 0)
        assert protocol.decode_error(error)[0] in (ErrorCode.BAD_FRAME, ErrorCode.TOO_LARGE)
        assert await client.at_eof()
    async with connection(worker.socket) as conn:
        await conn.ping()
    assert worker.process.returncode is None


async def test_sigterm_finishes_in_flight_requests_then_exits_zero(
    worker: WorkerProcess, reference: Reference
) -> None:
    async with raw_client(worker.socket) as client:
        for rid in range(1, 9):
            await client.send(protocol.encode_embed(rid, reference.sentences[:30]))
        # The worker reads frames in order: its PONG proves every EMBED above was accepted.
        await client.send(protocol.encode_frame(FrameType.PING, 100))
        frames = [await client.frame()]
        while frames[-1].type is not FrameType.PONG:
            frames.append(await client.frame())
        worker.process.send_signal(signal.SIGTERM)
        while len(frames) < 9:
            frames.append(await client.frame())
        assert await client.at_eof()
    results = {
        f.request_id: protocol.decode_result(f) for f in frames if f.type is FrameType.RESULT
    }
    assert sorted(results) == list(range(1, 9))
    for result in results.values():
        assert np.abs(result.vectors - reference.embeddings[:30]).max() <= 1e-5
    assert await worker.process.wait() == 0
    assert not worker.socket.exists()


async def test_closing_stdin_drains_and_exits_zero(worker: WorkerProcess) -> None:
    assert worker.process.stdin is not None
    worker.process.stdin.close()
    assert await worker.process.wait() == 0


@pytest.mark.parametrize("inline_max_tokens", [0, 64])
async def test_lone_queries_match_the_model_on_the_loop_thread_or_the_inference_thread(
    model_dir: Path, sock_dir: Path, embedder: OnnxEmbedder, inline_max_tokens: int
) -> None:
    from tests.embedder_fixtures import start_worker  # a plugin here: imported once loaded

    worker = await start_worker(
        model_dir, sock_dir / "w.sock", "--inline-max-tokens", str(inline_max_tokens)
    )
    texts = ["a short query", "what is the capital of France?", "x " * 100]  # 3rd: 102 tokens
    try:
        async with connection(worker.socket) as conn:
            before = await conn.stats()
            got = [await conn.embed([text]) for text in texts]
            after = await conn.stats()
    finally:
        await worker.stop(signal.SIGKILL)
    vectors = np.concatenate([result.vectors for result in got])
    assert np.abs(vectors - embedder.embed(texts)).max() <= 1e-5
    assert [result.token_counts for result in got] == [(5,), (9,), (102,)]
    assert after["inline_max_tokens"] == inline_max_tokens
    assert cast(float, after["model_seconds"]) > cast(float, before["model_seconds"])
    inline = cast(int, after["inline_batches"]) - cast(int, before["inline_batches"])
    assert inline == (2 if inline_max_tokens else 0)  # the 102-token one always goes to the thread


async def test_a_ping_is_answered_while_a_batch_runs(
    worker: WorkerProcess, reference: Reference
) -> None:
    async with raw_client(worker.socket) as client:
        await client.send(protocol.encode_embed(1, reference.sentences * 3))  # a few 100 ms
        await client.send(protocol.encode_embed(2, ["queued behind it"]))
        # The first ping's answer means the worker has read both requests and moved on: the
        # second is then asked while the batch is running.
        await client.send(protocol.encode_frame(FrameType.PING, 3))
        first = await client.frame()
        await client.send(protocol.encode_frame(FrameType.PING, 4))
        replies = [first] + [await client.frame() for _ in range(3)]
    assert [(f.type, f.request_id) for f in replies[:2]] == [
        (FrameType.PONG, 3), (FrameType.PONG, 4),
    ]  # fmt: skip
    assert {(f.type, f.request_id) for f in replies[2:]} == {
        (FrameType.RESULT, 1), (FrameType.RESULT, 2),
    }  # fmt: skip


@pytest.mark.parametrize("lanes", [1, 2])
async def test_a_big_request_runs_in_up_to_lanes_inferences_at_once_and_matches_the_model(
    model_dir: Path, sock_dir: Path, reference: Reference, lanes: int
) -> None:
    from tests.embedder_fixtures import start_worker  # a plugin here: imported once loaded

    worker = await start_worker(model_dir, sock_dir / "w.sock", "--lanes", str(lanes))
    try:
        async with connection(worker.socket) as conn:
            result = await conn.embed(reference.sentences)  # 60 texts: batches cut for 2 lanes
            stats = await conn.stats()
    finally:
        await worker.stop(signal.SIGKILL)
    assert np.abs(result.vectors - reference.embeddings).max() <= 1e-5
    assert (stats["lanes"], stats["peak_lanes"]) == (lanes, lanes)


async def test_garbled_frames_get_errors_or_answers_and_the_worker_lives(
    worker: WorkerProcess, embedder: OnnxEmbedder
) -> None:
    """Valid EMBED frames with a few bytes changed, dropped or repeated, each followed by a
    PING and the end of the connection: every reply is a whole frame of a known type, and the
    worker answers correctly afterwards."""
    rng = fuzz_rng(41)
    for i in range(40):
        frame = bytearray(protocol.encode_embed(i + 1, ["hello there", "é" * 20, ""][: i % 3 + 1]))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(frame))
            if rng.random() < 0.6:
                frame[at] = rng.randrange(256)
            else:
                del frame[at : at + rng.randint(1, 4)]
        async with raw_client(worker.socket) as client:
            await client.send(bytes(frame) + protocol.encode_frame(FrameType.PING, 999))
            client.writer.write_eof()
            replies = []
            with contextlib.suppress(asyncio.IncompleteReadError):
                while True:
                    replies.append(await client.frame())
        assert {f.type for f in replies} <= {FrameType.RESULT, FrameType.ERROR, FrameType.PONG}
    async with connection(worker.socket) as conn:
        result = await conn.embed(["hello there"])
    assert np.abs(result.vectors - embedder.embed(["hello there"])).max() <= 1e-5
    assert worker.process.returncode is None
