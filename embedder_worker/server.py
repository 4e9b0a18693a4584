"""The worker's Unix socket server and its micro-batcher.

``WorkerServer`` answers frames (see ``protocol``) on a Unix socket. Each connection is an
``asyncio.Protocol``: the frames of every chunk read are parsed and dispatched at once, without a
task per connection. EMBED texts are tokenized on arrival and queued; once the chunk is dispatched,
``MicroBatcher`` is told to start. Once a lane is free it takes up to ``max_batch`` of the oldest
queued texts, waiting at most ``max_wait_ms`` (and only while more keep arriving) to fill a batch,
splits them into groups of similar token length so short texts do not pay for a long one's
padding, and runs each group.

Where a group runs: up to ``lanes`` groups run at once, each in its own inference thread, on the
model's one session (one copy of the weights; onnxruntime's ``run`` is thread-safe and releases
the GIL). When lanes are free and a batch is big, it is cut in halves so they run side by side:
two inferences on about one CPU each go further than one inference over two threads. A lone text
of at most ``inline_max_tokens`` tokens, with nothing else running, runs on the event loop's own
thread instead (the worker has no other job; a hop to another thread and back costs two thread
wake-ups, ~0.4 ms on a 2-vCPU VM). Meanwhile frames wait in the socket buffer and form the next
batch, and a PING waits at most that one inference. ``inline_max_tokens=0`` sends every group to
a lane. A request's RESULT frame is written as soon as its last text is computed.

Lifecycle: STARTING -> READY (listening; the socket file appears only once it accepts) ->
DRAINING (``drain()``: stop accepting, refuse new EMBEDs with SHUTTING_DOWN, finish the queued and
running work, reply) -> CLOSED. Touches only its socket path.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, cast

import numpy as np

from embedder_worker import protocol
from embedder_worker.allocator import IdleTrim
from embedder_worker.model import Encoded, FloatArray, length_batches
from embedder_worker.protocol import ErrorCode, Frame, FrameType, ProtocolError
from embedder_worker.settings import DEFAULT_LANES

logger = logging.getLogger(__name__)

# A lone text up to this many tokens runs on the loop thread (~5 ms for MiniLM at 16 tokens,
# ~17 ms at 64): the longest a PING may then wait.
DEFAULT_INLINE_MAX_TOKENS = 64
# A batch is cut in halves for free lanes only from this many texts: below it, one inference on
# every intra-op thread is about as fast, and halves would wait for each other's CPU.
_MIN_SPLIT = 8
_Inference = asyncio.Future[tuple[FloatArray, float]]


class Model(Protocol):
    """What the server needs of a model (``model.OnnxEmbedder`` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def max_length(self) -> int: ...

    @property
    def pooling(self) -> str: ...

    @property
    def normalize(self) -> bool: ...

    @property
    def quantized(self) -> bool: ...

    @property
    def threads(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> list[Encoded]: ...

    def infer(self, batch: Sequence[Encoded]) -> FloatArray: ...


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    CLOSED = "closed"


class _Connection(asyncio.Protocol):
    """One client connection: parses frames as bytes arrive, writes replies, knows its unanswered
    requests. Backpressure: while the client does not read its answers, it is not read from."""

    def __init__(self, server: WorkerServer) -> None:
        self._server = server
        self._frames = protocol.FrameReader()
        self._transport: asyncio.Transport | None = None
        self.pending: set[EmbedRequest] = set()
        self.closed = asyncio.get_running_loop().create_future()  # set by connection_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._server.connection_made(self)

    def data_received(self, data: bytes) -> None:
        self._frames.feed(data)
        while self.is_open:
            try:
                frame = self._frames.next_frame()
            except ProtocolError as exc:
                logger.warning("bad frame: %s", exc)
                self.send(protocol.encode_error(exc.request_id, exc.code, str(exc)))
                if exc.framing_lost:
                    self.close()  # after the error is written
                continue
            if frame is None:
                break
            self._server.dispatch(self, frame)
        self._server.frames_dispatched()

    def eof_received(self) -> bool:
        return False  # close: nobody is left to read the answers

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            logger.debug("connection lost: %s", exc)
        for request in list(self.pending):  # nobody is left to read the answers
            request.cancel()
        self._server.connection_lost(self)
        if not self.closed.done():
            self.closed.set_result(None)

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def send(self, data: bytes) -> None:
        if self.is_open:
            assert self._transport is not None
            self._transport.write(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class EmbedRequest:
    """One EMBED frame: its texts, filled in by batches, answered once the last one is in."""

    def __init__(self, conn: _Connection, rid: int, encoded: list[Encoded], dim: int) -> None:
        self.conn = conn
        self.rid = rid
        self.encoded = encoded
        self.cancelled = False
        self.done = asyncio.get_running_loop().create_future()  # awaited by drain()
        self._vectors = np.empty((len(encoded), dim), dtype=np.float32)
        self._remaining = len(encoded)
        conn.pending.add(self)

    def fill(self, index: int, vector: FloatArray) -> None:
        self._vectors[index] = vector
        self._remaining -= 1
        if self._remaining == 0:
            counts = [enc.length for enc in self.encoded]
            self._finish(protocol.encode_result(self.rid, self._vectors, counts))

    def fail(self, message: str) -> None:
        self._finish(protocol.encode_error(self.rid, ErrorCode.INTERNAL, message))

    def cancel(self) -> None:
        """The client is gone: skip the texts not computed yet, answer nothing."""
        self.cancelled = True
        self._finish(b"")

    def _finish(self, reply: bytes) -> None:
        if self.done.done():
            return
        if reply and not self.cancelled:
            self.conn.send(reply)
        self.conn.pending.discard(self)
        self.done.set_result(None)


class _Slot:
    """One text of a request, waiting in the batcher's queue."""

    __slots__ = ("index", "request")

    def __init__(self, request: EmbedRequest, index: int) -> None:
        self.request = request
        self.index = index

    @property
    def encoded(self) -> Encoded:
        return self.request.encoded[self.index]


class MicroBatcher:
    """Gathers queued texts into bounded batches and runs them, up to ``lanes`` inferences at
    once: a lone short text on the loop thread, the rest in lanes (see the module docstring)."""

    def __init__(
        self,
        model: Model,
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        inline_max_tokens: int = DEFAULT_INLINE_MAX_TOKENS,
        lanes: int = DEFAULT_LANES,
    ) -> None:
        self._model = model
        self._max_batch = max_batch
        self._max_wait_s = max_wait_ms / 1000.0
        self._inline_max_tokens = inline_max_tokens
        self._lanes = lanes
        self._queue: deque[_Slot] = deque()
        self._wake = asyncio.Event()
        self._active = False  # the task has been woken and has not emptied the queue yet
        self._gather_first = True  # whether the task's first batch waits for more texts
        self._turn: asyncio.Handle | None = None  # a start deferred by one turn of the loop
        self._running: set[_Inference] = set()  # inferences in the lanes now
        self._lane_freed = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="embedder-lane")
        self.idle_trim = IdleTrim()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # inferences run, of them on the loop thread, and texts embedded
        self.inline_batches = 0
        self.texts = 0
        self.peak_lanes = 0  # the most inferences that ran at once
        self.model_seconds = 0.0  # spent tokenizing and in inference: the model's own time

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="embedder-batcher")

    async def close(self) -> None:
        """Stop after the running inferences; requests still queued are cancelled."""
        self.idle_trim.cancel()
        if self._turn is not None:
            self._turn.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._running:
            await asyncio.wait(self._running)
        for slot in self._queue:
            slot.request.cancel()
        self._queue.clear()
        self._executor.shutdown(wait=True)

    def submit(self, request: EmbedRequest) -> None:
        """Queue the request's texts; they start with the next ``start_queued`` call."""
        self._queue.extend(_Slot(request, i) for i in range(len(request.encoded)))

    def start_queued(self, *, all_read: bool) -> None:
        """Start on the queued texts, unless the task is already at it (it will take them).

        ``all_read``: every frame readable now has been queued (one connection, its bytes all
        parsed), so there is no point in a turn of the loop to let more arrive.
        """
        if self._active or self._turn is not None or not self._queue:
            return
        if all_read:
            self._start(gather=False)
        else:  # one turn of the loop: frames readable on other connections join this batch
            self._turn = asyncio.get_running_loop().call_soon(self._after_turn)

    def _after_turn(self) -> None:
        self._turn = None
        if not self._active and self._queue:
            self._start(gather=True)

    def _start(self, gather: bool) -> None:
        lone = list(self._queue) if len(self._queue) == 1 else []
        if lone and not lone[0].request.cancelled and self._runs_inline(lone):
            self._infer_inline([self._queue.popleft()])
            return
        self._active = True
        self._gather_first = gather
        self._wake.set()

    def _runs_inline(self, group: list[_Slot]) -> bool:
        """A lone short text, with no lane busy: on the loop thread."""
        return (
            len(group) == 1
            and group[0].encoded.length <= self._inline_max_tokens
            and not self._running
        )

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            gather = self._gather_first
            while self._queue:
                await self._free_lane()
                if gather:
                    await self._gather()
                gather = True
                for group in self._groups(self._take()):
                    if self._runs_inline(group):
                        self._infer_inline(group)
                        await asyncio.sleep(0)  # let the loop read and answer in between
                    else:
                        await self._free_lane()
                        self._start_lane(group)
            self._active = False

    async def _free_lane(self) -> None:
        while len(self._running) >= self._lanes:
            self._lane_freed.clear()
            await self._lane_freed.wait()

    async def _gather(self) -> None:
        """Wait up to max_wait for a fuller batch, but only while more texts keep arriving."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait_s
        while len(self._queue) < self._max_batch and loop.time() < deadline:
            before = len(self._queue)
            await asyncio.sleep(0)  # one turn: lets already-readable frames be queued
            if len(self._queue) == before:
                return

    def _take(self) -> list[_Slot]:
        batch: list[_Slot] = []
        while self._queue and len(batch) < self._max_batch:
            slot = self._queue.popleft()
            if not slot.request.cancelled:
                batch.append(slot)
        return batch

    def _groups(self, batch: list[_Slot]) -> list[list[_Slot]]:
        """Groups of similar token length; the biggest cut in halves while lanes would idle."""
        lengths = [slot.encoded.length for slot in batch]
        groups = [[batch[i] for i in group] for group in length_batches(lengths, self._max_batch)]
        free = self._lanes - len(self._running)
        while groups and len(groups) < free:
            biggest = max(range(len(groups)), key=lambda i: len(groups[i]))
            group = groups[biggest]
            if len(group) < _MIN_SPLIT:
                break
            half = len(group) // 2  # texts are sorted by length: halves stay alike
            groups[biggest : biggest + 1] = [group[:half], group[half:]]
        return groups

    def _infer_inline(self, group: list[_Slot]) -> None:
        try:
            vectors, seconds = self._timed_infer([slot.encoded for slot in group])
        except Exception as exc:
            self._failed(group, exc)
            return
        self.inline_batches += 1
        self._fill(group, vectors, seconds)

    def _start_lane(self, group: list[_Slot]) -> None:
        loop = asyncio.get_running_loop()
        batch = [slot.encoded for slot in group]
        inference = loop.run_in_executor(self._executor, self._timed_infer, batch)
        self._running.add(inference)
        self.peak_lanes = max(self.peak_lanes, len(self._running))
        inference.add_done_callback(functools.partial(self._lane_done, group))

    def _lane_done(self, group: list[_Slot], inference: _Inference) -> None:
        self._running.discard(inference)
        self._lane_freed.set()
        if inference.cancelled():
            self._failed(group, asyncio.CancelledError())
            return
        exc = inference.exception()
        if exc is not None:
            self._failed(group, exc)
            return
        vectors, seconds = inference.result()
        self._fill(group, vectors, seconds)

    def _timed_infer(self, batch: list[Encoded]) -> tuple[FloatArray, float]:
        started = time.perf_counter()
        vectors = self._model.infer(batch)
        return vectors, time.perf_counter() - started

    def _failed(self, group: list[_Slot], exc: BaseException) -> None:
        logger.error("inference failed for a batch of %d", len(group), exc_info=exc)
        for slot in group:
            slot.request.fail(f"inference failed: {exc!r}")

    def _fill(self, group: list[_Slot], vectors: FloatArray, seconds: float) -> None:
        self.model_seconds += seconds
        self.batches += 1
        self.idle_trim.touch()
        self.texts += len(group)
        for slot, row in zip(group, vectors, strict=True):
            if not slot.request.cancelled:
                slot.request.fill(slot.index, row)


def _listening_socket(path: Path) -> socket.socket:
    """A Unix socket already listening at ``path``: bound under a temporary name, then renamed,
    so that whoever sees the file can connect."""
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(staging))
        sock.listen(128)
        os.replace(staging, path)
    except BaseException:
        sock.close()
        staging.unlink(missing_ok=True)
        raise
    sock.setblocking(False)
    return sock


class WorkerServer:
    """Serves one model on one Unix socket (see the module docstring for the lifecycle)."""

    def __init__(
        self,
        model: Model,
        path: Path,
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        inline_max_tokens: int = DEFAULT_INLINE_MAX_TOKENS,
        lanes: int = DEFAULT_LANES,
    ) -> None:
        self.model = model
        self.path = path
        self.state = State.STARTING
        self._batcher = MicroBatcher(model, max_batch, max_wait_ms, inline_max_tokens, lanes)
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._info = {
            "name": model.name,
            "dim": model.dim,
            "max_length": model.max_length,
            "pooling": model.pooling,
            "normalize": model.normalize,
            "quantized": model.quantized,
            "max_batch": max_batch,
            "inline_max_tokens": inline_max_tokens,
            "threads": model.threads,
            "lanes": lanes,
            "pid": os.getpid(),
        }

    async def start(self) -> None:
        """Listen; the model must already be loaded and warm."""
        self._batcher.start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(
            lambda: _Connection(self), sock=_listening_socket(self.path)
        )
        self.state = State.READY
        logger.info("listening on %s", self.path)

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Stop accepting, finish in-flight requests (up to ``timeout_s``), then close."""
        if self.state in (State.DRAINING, State.CLOSED):
            return
        self.state = State.DRAINING
        if self._server is not None:
            self._server.close()
        self.path.unlink(missing_ok=True)
        pending = [req.done for conn in self._connections for req in conn.pending]
        if pending:
            logger.info("draining %d in-flight requests", len(pending))
            await asyncio.wait(pending, timeout=timeout_s)
        connections = list(self._connections)
        for conn in connections:
            conn.close()  # replies already written are still sent
        if connections:
            _, stuck = await asyncio.wait([conn.closed for conn in connections], timeout=timeout_s)
            for conn in connections:  # a client that never reads its replies
                if not conn.closed.done():
                    conn.abort()
            if stuck:
                await asyncio.wait(stuck)
        await self._batcher.close()
        self.state = State.CLOSED
        logger.info("drained and closed")

    def connection_made(self, conn: _Connection) -> None:
        self._connections.add(conn)

    def connection_lost(self, conn: _Connection) -> None:
        self._connections.discard(conn)

    def frames_dispatched(self) -> None:
        """A connection's bytes were all parsed: start on what they queued."""
        self._batcher.start_queued(all_read=len(self._connections) == 1)

    def dispatch(self, conn: _Connection, frame: Frame) -> None:
        rid = frame.request_id
        if frame.type is FrameType.EMBED and self.state is State.READY:
            self._accept_embed(conn, frame)
        elif frame.type is FrameType.PING:
            conn.send(protocol.encode_frame(FrameType.PONG, rid))
        elif frame.type is FrameType.INFO:
            batcher = self._batcher
            stats = {
                "batches": batcher.batches,
                "inline_batches": batcher.inline_batches,
                "texts": batcher.texts,
                "peak_lanes": batcher.peak_lanes,
                "model_seconds": batcher.model_seconds,
            }
            conn.send(protocol.encode_info(rid, {**self._info, **stats}))
        elif frame.type is not FrameType.EMBED:
            message = f"unexpected frame type {frame.type.name} from a client"
            conn.send(protocol.encode_error(rid, ErrorCode.BAD_REQUEST, message))
        else:
            conn.send(protocol.encode_error(rid, ErrorCode.SHUTTING_DOWN, "worker is draining"))

    def _accept_embed(self, conn: _Connection, frame: Frame) -> None:
        try:
            texts = protocol.decode_embed(frame)
        except ProtocolError as exc:
            conn.send(protocol.encode_error(frame.request_id, exc.code, str(exc)))
            return
        # Tokenized here, on the loop, so the batcher can group texts by token length.
        started = time.perf_counter()
        try:
            encoded = self.model.encode(texts)
        except Exception as exc:  # the tokenizer is third-party code: keep the connection
            logger.exception("tokenizing %d texts failed", len(texts))
            conn.send(protocol.encode_error(frame.request_id, ErrorCode.INTERNAL, str(exc)))
            return
        self._batcher.model_seconds += time.perf_counter() - started
        self._batcher.submit(EmbedRequest(conn, frame.request_id, encoded, self.model.dim))
