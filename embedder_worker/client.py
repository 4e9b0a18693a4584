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
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

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


class WorkerConnection(asyncio.Protocol):
    """One connection to one worker, with any number of requests in flight.

    An ``asyncio.Protocol``: replies are parsed as their bytes arrive and handed to their callers'
    futures at once, without a reader task in between (one turn of the loop less per reply).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.in_flight = 0
        self.draining = False  # the worker said SHUTTING_DOWN: send it nothing new
        self.info: WorkerInfo | None = None
        self._transport: asyncio.Transport | None = None
        self._frames = protocol.FrameReader()
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._last_id = 0
        self._closed = asyncio.Event()
        self._closing_reason = "worker closed the connection"
        self._write_waiters: list[asyncio.Future[None]] | None = None  # while writing is paused
        self._close_callbacks: list[Callable[[WorkerConnection], None]] = []

    @classmethod
    async def open(cls, path: Path, timeout_s: float = 5.0) -> WorkerConnection:
        """Connect, then ask for INFO; raises OSError / TimeoutError / EmbedderError."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            _, conn = await loop.create_unix_connection(lambda: cls(path), str(path))
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
        if self._transport is not None and not self._closed.is_set():
            self._closing_reason = "closed"
            self._transport.close()  # connection_lost follows, once buffered frames are sent
            await self._closed.wait()

    async def embed(self, texts: Sequence[str]) -> protocol.Result:
        rid = self._next_id()
        count = len(texts)
        self.in_flight += count
        try:
            frame = await self._request(rid, protocol.encode_embed(rid, texts))
        finally:
            self.in_flight -= count
        if frame.type is FrameType.ERROR:
            error = _error_from(frame)
            self.draining = self.draining or isinstance(error, WorkerGone)
            raise error
        try:
            return protocol.decode_result(frame)
        except ProtocolError as exc:
            raise EmbedderError(f"bad RESULT from {self.path}: {exc}") from exc

    async def ping(self) -> None:
        rid = self._next_id()
        frame = await self._request(rid, protocol.encode_frame(FrameType.PING, rid))
        if frame.type is not FrameType.PONG:
            raise EmbedderError(f"expected PONG, got {frame.type.name}")

    async def stats(self) -> dict[str, object]:
        """The worker's INFO: its model, and counters (batches, texts, model_seconds...)."""
        return protocol.decode_info(await self._info_frame())

    async def _info_frame(self) -> Frame:
        rid = self._next_id()
        frame = await self._request(rid, protocol.encode_frame(FrameType.INFO, rid))
        if frame.type is not FrameType.INFO:
            raise _error_from(frame)
        return frame

    def _next_id(self) -> int:
        """1..2**32-1, then around again (0 is the connection-level error id)."""
        self._last_id = self._last_id % _REQUEST_IDS + 1
        return self._last_id

    async def _request(self, rid: int, data: bytes) -> Frame:
        if self._closed.is_set() or self._transport is None:
            raise WorkerGone(f"connection to {self.path} is closed")
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            self._transport.write(data)
            if self._write_waiters is not None:  # the worker is not reading: wait until it does
                waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._write_waiters.append(waiter)
                await waiter
            return await future
        finally:
            # Whether answered, failed or cancelled: a late reply for rid is then ignored.
            self._pending.pop(rid, None)

    # asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._closed.is_set():
            return
        self._frames.feed(data)
        try:
            while (frame := self._frames.next_frame()) is not None:
                if frame.type is FrameType.ERROR and frame.request_id == 0:
                    message = protocol.decode_error(frame)[1]
                    self._lose(f"worker lost the framing: {message}")
                    return
                future = self._pending.get(frame.request_id)
                if future is not None and not future.done():
                    future.set_result(frame)
        except ProtocolError as exc:
            self._lose(f"connection failed: {exc}")

    def eof_received(self) -> bool:
        return False  # close our end too

    def pause_writing(self) -> None:
        self._write_waiters = []

    def resume_writing(self) -> None:
        self._wake_writers()

    def connection_lost(self, exc: Exception | None) -> None:
        reason = self._closing_reason if exc is None else f"connection failed: {exc}"
        self._fail_all(reason)

    def _lose(self, reason: str) -> None:
        self._fail_all(reason)
        if self._transport is not None:
            self._transport.close()

    def _wake_writers(self) -> None:
        waiters, self._write_waiters = self._write_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def _fail_all(self, reason: str) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._wake_writers()
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
        """The [dim] vector of one text (read-only: the LRU shares it).

        Every ``auto`` request makes this call, so it skips ``embed_with_usage``'s batch
        bookkeeping (a dict of hits, the missing list, one stacked copy of the vectors)."""
        hit = self._lru.get(text)
        if hit is None:
            hit = (await self._compute([text]))[text]
        return hit[0]

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
