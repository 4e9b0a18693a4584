"""The gateway's side of the embedding workers: one connection per worker, and a pool over them.

``WorkerConnection`` multiplexes many requests over one Unix socket by request id; a caller that is
cancelled (or times out) only drops its pending entry, and a late reply is ignored, so the
connection stays usable. ``EmbedderPool`` spreads calls over its live connections by least texts in
flight, answers exact repeats from a small LRU, and bounds every call by ``call_timeout_ms``.

Failure semantics: a call started while no worker is live fails at once with
``EmbedderUnavailable`` (the gateway degrades instead of waiting); a call whose worker dies or
starts draining under it is retried on another live worker, or on the first one to come back,
until its deadline, then fails with ``EmbedderUnavailable``. Which sockets to connect to, and when,
is the supervisor's business (``embedder_worker.supervisor``). Touches only the sockets it is
given.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from embedder_worker import protocol
from embedder_worker.protocol import ErrorCode, Frame, FrameType, ProtocolError

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
_MAX_TEXTS_PER_FRAME = 64
_MAX_BYTES_PER_FRAME = 4 * 1024 * 1024
_REQUEST_IDS = 2**32 - 1  # ids 1..2**32-1; 0 is the connection-level error id


class EmbedderError(Exception):
    """An embedding call failed."""


class EmbedderUnavailable(EmbedderError):
    """No embedder worker answered (none live, or none within the call's timeout)."""


class EmbedderRequestError(EmbedderError):
    """A worker rejected the request itself (e.g. too large); retrying will not help."""


class WorkerGone(EmbedderError):
    """The worker's connection closed or the worker is draining; the call may go elsewhere."""


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """What a worker reports about its model."""

    name: str
    dim: int
    max_length: int
    pooling: str
    normalize: bool
    quantized: bool
    pid: int

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> WorkerInfo:
        try:
            return cls(
                name=str(raw["name"]),
                dim=int(str(raw["dim"])),
                max_length=int(str(raw["max_length"])),
                pooling=str(raw["pooling"]),
                normalize=bool(raw["normalize"]),
                quantized=bool(raw.get("quantized", False)),
                pid=int(str(raw.get("pid", 0))),
            )
        except (KeyError, ValueError) as exc:
            raise EmbedderError(f"worker sent an unusable INFO: {raw!r}") from exc


@dataclass(frozen=True, slots=True)
class Embeddings:
    """Vectors in input order, and how many tokens each text was (after truncation)."""

    vectors: FloatArray
    token_counts: tuple[int, ...]

    @property
    def prompt_tokens(self) -> int:
        return sum(self.token_counts)


def _error_from(frame: Frame) -> EmbedderError:
    code, message = protocol.decode_error(frame)
    if code is ErrorCode.SHUTTING_DOWN:
        return WorkerGone(message)
    if code in (ErrorCode.BAD_REQUEST, ErrorCode.TOO_LARGE):
        return EmbedderRequestError(message)
    return EmbedderError(f"worker error {code.name}: {message}")


class WorkerConnection:
    """One connection to one worker, with any number of requests in flight."""

    def __init__(self, path: Path, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.path = path
        self.in_flight = 0
        self.draining = False  # the worker said SHUTTING_DOWN: send it nothing new
        self.info: WorkerInfo | None = None
        self._reader = reader
        self._writer = writer
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._ids = itertools.cycle(range(1, _REQUEST_IDS + 1))
        self._closed = asyncio.Event()
        self._close_callbacks: list[Callable[[WorkerConnection], None]] = []
        self._reader_task = asyncio.create_task(self._read_loop(), name=f"embedder-conn {path}")

    @classmethod
    async def open(cls, path: Path, timeout_s: float = 5.0) -> WorkerConnection:
        """Connect, then ask for INFO; raises OSError / TimeoutError / EmbedderError."""
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_unix_connection(str(path))
            conn = cls(path, reader, writer)
            try:
                conn.info = WorkerInfo.from_dict(protocol.decode_info(await conn._info_frame()))
            except BaseException:
                await conn.close()
                raise
        return conn

    @property
    def is_open(self) -> bool:
        return not self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def on_close(self, callback: Callable[[WorkerConnection], None]) -> None:
        """Call ``callback(self)`` once the connection has closed (at once if it already has)."""
        if self._closed.is_set():
            callback(self)
        else:
            self._close_callbacks.append(callback)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
        await self._reader_task

    async def embed(self, texts: Sequence[str]) -> protocol.Result:
        rid = next(self._ids)
        self.in_flight += len(texts)
        try:
            frame = await self._request(rid, protocol.encode_embed(rid, texts))
        finally:
            self.in_flight -= len(texts)
        if frame.type is FrameType.ERROR:
            error = _error_from(frame)
            self.draining = self.draining or isinstance(error, WorkerGone)
            raise error
        try:
            return protocol.decode_result(frame)
        except ProtocolError as exc:
            raise EmbedderError(f"bad RESULT from {self.path}: {exc}") from exc

    async def ping(self) -> None:
        rid = next(self._ids)
        frame = await self._request(rid, protocol.encode_frame(FrameType.PING, rid))
        if frame.type is not FrameType.PONG:
            raise EmbedderError(f"expected PONG, got {frame.type.name}")

    async def _info_frame(self) -> Frame:
        rid = next(self._ids)
        frame = await self._request(rid, protocol.encode_frame(FrameType.INFO, rid))
        if frame.type is not FrameType.INFO:
            raise _error_from(frame)
        return frame

    async def _request(self, rid: int, data: bytes) -> Frame:
        if self._closed.is_set():
            raise WorkerGone(f"connection to {self.path} is closed")
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            self._writer.write(data)
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()
            return await future
        finally:
            # Whether answered, failed or cancelled: a late reply for rid is then ignored.
            self._pending.pop(rid, None)

    async def _read_loop(self) -> None:
        reason = "closed"
        try:
            while True:
                frame = await protocol.read_frame(self._reader)
                if frame.type is FrameType.ERROR and frame.request_id == 0:
                    reason = f"worker lost the framing: {protocol.decode_error(frame)[1]}"
                    return
                future = self._pending.get(frame.request_id)
                if future is not None and not future.done():
                    future.set_result(frame)
        except asyncio.IncompleteReadError:
            reason = "worker closed the connection"
        except (ConnectionError, ProtocolError) as exc:
            reason = f"connection failed: {exc}"
        finally:
            self._fail_all(reason)

    def _fail_all(self, reason: str) -> None:
        self._closed.set()
        self._writer.close()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WorkerGone(f"{self.path}: {reason}"))
        self._pending.clear()
        logger.debug("connection to %s ended: %s", self.path, reason)
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            callback(self)


def _chunks(texts: Sequence[str]) -> Iterator[list[str]]:
    """Split texts into frames of bounded count and size, so big calls spread over workers."""
    chunk: list[str] = []
    size = 0
    for text in texts:
        length = len(text) * 4  # UTF-8 upper bound, without encoding twice
        if chunk and (len(chunk) >= _MAX_TEXTS_PER_FRAME or size + length > _MAX_BYTES_PER_FRAME):
            yield chunk
            chunk, size = [], 0
        chunk.append(text)
        size += length
    if chunk:
        yield chunk


class _Lru:
    """Recent texts -> (vector, token count); vectors are read-only and shared."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[str, tuple[FloatArray, int]] = OrderedDict()

    def get(self, text: str) -> tuple[FloatArray, int] | None:
        hit = self._items.get(text)
        if hit is not None:
            self._items.move_to_end(text)
        return hit

    def put(self, text: str, vector: FloatArray, tokens: int) -> None:
        if self._size <= 0:
            return
        vector.flags.writeable = False
        self._items[text] = (vector, tokens)
        self._items.move_to_end(text)
        while len(self._items) > self._size:
            self._items.popitem(last=False)


class EmbedderPool:
    """Calls spread over live worker connections; see the module docstring for failures."""

    def __init__(self, call_timeout_ms: float = 2000.0, lru_size: int = 1024) -> None:
        self.call_timeout_ms = call_timeout_ms
        self._lru = _Lru(lru_size)
        self._live: list[WorkerConnection] = []
        self._open: set[WorkerConnection] = set()  # live, and draining ones not closed yet
        self._changed = asyncio.Event()  # set (and replaced) whenever a connection comes or goes
        self._info: WorkerInfo | None = None
        self._closed = False
        self.on_restart: Callable[[], None] | None = None
        """Called when a supervised worker is started again after it died (for metrics)."""

    @property
    def queue_depth(self) -> int:
        """Texts sent to workers and not answered yet, over every live connection."""
        return sum(conn.in_flight for conn in self._live)

    @property
    def ready(self) -> bool:
        """At least one worker is connected and answered its warm-up call."""
        return bool(self._live)

    @property
    def info(self) -> WorkerInfo | None:
        """The model the workers serve (None until the first worker was attached)."""
        return self._info

    @property
    def connections(self) -> tuple[WorkerConnection, ...]:
        """The live worker connections, in the order they were attached."""
        return tuple(self._live)

    async def wait_live(self, count: int = 1) -> None:
        """Return once at least ``count`` workers are live (callers bound it with a timeout)."""
        while len(self._live) < count:
            await self._changed.wait()

    async def attach(self, path: Path, timeout_s: float = 10.0) -> WorkerConnection:
        """Connect to the worker at ``path``, check its model, warm the path up, start using it."""
        if self._closed:
            raise EmbedderUnavailable("the pool is closed")
        conn = await WorkerConnection.open(path, timeout_s)
        try:
            self._check_model(conn)
            async with asyncio.timeout(timeout_s):
                await conn.embed(["warm-up"])
            if self._closed:
                raise EmbedderUnavailable("the pool was closed meanwhile")
        except BaseException:
            await conn.close()
            raise
        self._live.append(conn)
        self._open.add(conn)
        self._notify()
        conn.on_close(self._closed_connection)
        logger.info("embedder worker at %s is live (%d live)", path, len(self._live))
        return conn

    def _check_model(self, conn: WorkerConnection) -> None:
        assert conn.info is not None
        if self._info is None:
            self._info = conn.info
        elif (conn.info.name, conn.info.dim) != (self._info.name, self._info.dim):
            raise EmbedderError(
                f"worker at {conn.path} serves {conn.info.name}/{conn.info.dim}, "
                f"the pool serves {self._info.name}/{self._info.dim}"
            )

    def _closed_connection(self, conn: WorkerConnection) -> None:
        self._open.discard(conn)
        self._forget(conn)

    def _forget(self, conn: WorkerConnection) -> None:
        if conn in self._live:
            self._live.remove(conn)
            self._notify()
            logger.warning("embedder worker at %s is gone (%d live)", conn.path, len(self._live))

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def close(self) -> None:
        """Close every connection; the pool then only answers from its LRU."""
        self._closed = True
        self._live = []
        await asyncio.gather(*(conn.close() for conn in list(self._open)))
        self._notify()

    async def embed(self, texts: Sequence[str]) -> FloatArray:
        """[len(texts), dim] float32 vectors, in order."""
        return (await self.embed_with_usage(texts)).vectors

    async def embed_one(self, text: str) -> FloatArray:
        """The [dim] vector of one text."""
        vectors = (await self.embed_with_usage([text])).vectors
        return np.ascontiguousarray(vectors[0], dtype=np.float32)

    async def embed_with_usage(self, texts: Sequence[str]) -> Embeddings:
        """Vectors and token counts; raises EmbedderUnavailable, EmbedderRequestError."""
        found: dict[str, tuple[FloatArray, int]] = {}
        for text in texts:
            hit = self._lru.get(text)
            if hit is not None:
                found[text] = hit
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            found.update(await self._compute(missing))
        if not texts:
            dim = self._info.dim if self._info is not None else 0
            return Embeddings(np.empty((0, dim), dtype=np.float32), ())
        vectors = np.stack([found[text][0] for text in texts])
        return Embeddings(vectors, tuple(found[text][1] for text in texts))

    async def _compute(self, texts: list[str]) -> dict[str, tuple[FloatArray, int]]:
        if not self._live:
            raise EmbedderUnavailable("no embedder worker is live")
        timeout_s = self.call_timeout_ms / 1000.0
        chunks = list(_chunks(texts))
        try:
            async with asyncio.timeout(timeout_s):
                if len(chunks) == 1:  # the common case, without a task per chunk
                    results = [await self._call(chunks[0])]
                else:
                    results = await asyncio.gather(*(self._call(chunk) for chunk in chunks))
        except TimeoutError as exc:
            raise EmbedderUnavailable(
                f"no embedder worker answered within {self.call_timeout_ms:g} ms"
            ) from exc
        out: dict[str, tuple[FloatArray, int]] = {}
        for chunk, result in zip(chunks, results, strict=True):
            for text, vector, tokens in zip(
                chunk, result.vectors, result.token_counts, strict=True
            ):
                self._lru.put(text, vector, tokens)
                out[text] = (vector, tokens)
        return out

    async def _call(self, texts: list[str]) -> protocol.Result:
        """One frame's worth of texts, retried on another worker when its worker goes away."""
        while True:
            conn = await self._pick()
            try:
                return await conn.embed(texts)
            except WorkerGone as exc:
                logger.debug("retrying %d texts elsewhere: %s", len(texts), exc)
                if conn.draining:
                    self._forget(conn)  # still open while it finishes, but takes no new work

    async def _pick(self) -> WorkerConnection:
        while True:
            live = [conn for conn in self._live if conn.is_open]
            if live:
                return min(live, key=_load)
            await self._changed.wait()


def _load(conn: WorkerConnection) -> int:
    return conn.in_flight
