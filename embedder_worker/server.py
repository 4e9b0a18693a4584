"""The worker's Unix socket server and its micro-batcher.

``WorkerServer`` answers frames (see ``protocol``) on a Unix socket. EMBED texts are tokenized on
arrival and queued at once; ``MicroBatcher`` takes up to ``max_batch`` of the oldest queued texts,
waiting at most ``max_wait_ms`` (and only while more keep arriving) to fill a batch, splits them
into groups of similar token length so short texts do not pay for a long one's padding, and runs
each group in its one inference thread, so the event loop keeps reading and answering meanwhile.
A request's RESULT frame is written as soon as its last text is computed.

Lifecycle: STARTING -> READY (listening; the socket file appears only once it accepts) ->
DRAINING (``drain()``: stop accepting, refuse new EMBEDs with SHUTTING_DOWN, finish the queued and
running work, reply) -> CLOSED. Touches only its socket path.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import socket
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np

from embedder_worker import protocol
from embedder_worker.model import Encoded, FloatArray, length_batches
from embedder_worker.protocol import ErrorCode, Frame, FrameType, ProtocolError

logger = logging.getLogger(__name__)


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

    def encode(self, texts: Sequence[str]) -> list[Encoded]: ...

    def infer(self, batch: Sequence[Encoded]) -> FloatArray: ...


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    CLOSED = "closed"


class _Connection:
    """One client connection: writes replies, knows its unanswered requests."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.pending: set[EmbedRequest] = set()

    def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


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
    """Gathers queued texts into bounded batches; one inference at a time, in its own thread."""

    def __init__(self, model: Model, max_batch: int = 32, max_wait_ms: float = 2.0) -> None:
        self._model = model
        self._max_batch = max_batch
        self._max_wait_s = max_wait_ms / 1000.0
        self._queue: deque[_Slot] = deque()
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder-infer")
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # inferences run, and texts embedded, since start
        self.texts = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="embedder-batcher")

    async def close(self) -> None:
        """Stop after the current batch; requests still queued are cancelled."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for slot in self._queue:
            slot.request.cancel()
        self._queue.clear()
        self._executor.shutdown(wait=True)

    def submit(self, request: EmbedRequest) -> None:
        self._queue.extend(_Slot(request, i) for i in range(len(request.encoded)))
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await self._gather()
            batch = self._take()
            if not self._queue:
                self._wake.clear()
            lengths = [slot.encoded.length for slot in batch]
            groups = length_batches(lengths, self._max_batch)
            if os.environ.get("EW_INLINE") and len(batch) == 1:
                self._finish_group(batch, self._model.infer([batch[0].encoded]))
                continue
            for group in groups:
                await self._infer([batch[i] for i in group])

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

    async def _infer(self, group: list[_Slot]) -> None:
        loop = asyncio.get_running_loop()
        try:
            vectors = await loop.run_in_executor(
                self._executor, self._model.infer, [slot.encoded for slot in group]
            )
        except Exception as exc:
            logger.exception("inference failed for a batch of %d", len(group))
            for slot in group:
                slot.request.fail(f"inference failed: {exc}")
            return
        self._finish_group(group, vectors)

    def _finish_group(self, group: list[_Slot], vectors: FloatArray) -> None:
        self.batches += 1
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

    def __init__(self, model: Model, path: Path, max_batch: int = 32, max_wait_ms: float = 2.0):
        self.model = model
        self.path = path
        self.state = State.STARTING
        self._batcher = MicroBatcher(model, max_batch, max_wait_ms)
        self._server: asyncio.Server | None = None
        # Each connection's handler task, so that drain() can wait for them to finish.
        self._connections: dict[_Connection, asyncio.Task[object]] = {}
        self._info = {
            "name": model.name,
            "dim": model.dim,
            "max_length": model.max_length,
            "pooling": model.pooling,
            "normalize": model.normalize,
            "quantized": model.quantized,
            "max_batch": max_batch,
            "pid": os.getpid(),
        }

    async def start(self) -> None:
        """Listen; the model must already be loaded and warm."""
        self._batcher.start()
        self._server = await asyncio.start_unix_server(
            self._serve, sock=_listening_socket(self.path)
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
        handlers = list(self._connections.values())
        await asyncio.gather(*(conn.close() for conn in list(self._connections)))
        if handlers:
            await asyncio.wait(handlers)
        await self._batcher.close()
        self.state = State.CLOSED
        logger.info("drained and closed")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(writer)
        handler = asyncio.current_task()
        assert handler is not None
        self._connections[conn] = handler
        try:
            await self._read_loop(reader, conn)
        except ConnectionError:
            logger.debug("connection reset by peer")
        finally:
            for request in list(conn.pending):  # nobody is left to read the answers
                request.cancel()
            await conn.close()
            self._connections.pop(conn, None)

    async def _read_loop(self, reader: asyncio.StreamReader, conn: _Connection) -> None:
        while True:
            try:
                frame = await protocol.read_frame(reader)
            except asyncio.IncompleteReadError:
                return
            except ProtocolError as exc:
                logger.warning("bad frame: %s", exc)
                conn.send(protocol.encode_error(exc.request_id, exc.code, str(exc)))
                if exc.framing_lost:
                    return
                continue
            self._dispatch(conn, frame)
            # Backpressure: a client that does not read its answers is not read from either.
            await conn.writer.drain()

    def _dispatch(self, conn: _Connection, frame: Frame) -> None:
        rid = frame.request_id
        if frame.type is FrameType.PING:
            conn.send(protocol.encode_frame(FrameType.PONG, rid))
        elif frame.type is FrameType.INFO:
            stats = {"batches": self._batcher.batches, "texts": self._batcher.texts}
            conn.send(protocol.encode_info(rid, {**self._info, **stats}))
        elif frame.type is not FrameType.EMBED:
            message = f"unexpected frame type {frame.type.name} from a client"
            conn.send(protocol.encode_error(rid, ErrorCode.BAD_REQUEST, message))
        elif self.state is not State.READY:
            conn.send(protocol.encode_error(rid, ErrorCode.SHUTTING_DOWN, "worker is draining"))
        else:
            self._accept_embed(conn, frame)

    def _accept_embed(self, conn: _Connection, frame: Frame) -> None:
        try:
            texts = protocol.decode_embed(frame)
        except ProtocolError as exc:
            conn.send(protocol.encode_error(frame.request_id, exc.code, str(exc)))
            return
        # Tokenized here, on the loop, so the batcher can group texts by token length.
        try:
            encoded = self.model.encode(texts)
        except Exception as exc:  # the tokenizer is third-party code: keep the connection
            logger.exception("tokenizing %d texts failed", len(texts))
            conn.send(protocol.encode_error(frame.request_id, ErrorCode.INTERNAL, str(exc)))
            return
        self._batcher.submit(EmbedRequest(conn, frame.request_id, encoded, self.model.dim))
