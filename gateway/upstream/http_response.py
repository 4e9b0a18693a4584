"""One upstream HTTP response: its status and headers, its body read as it arrives or pushed.

``Response.readany(timeout_s)`` yields the body as it arrives (chunked, sized or read to the
connection's end), ``read`` collects it whole. Reading pauses the socket when more than
``MAX_BUFFERED`` bytes wait unread. A response keeps one read timer, moved forward lazily,
rather than arming one per read. gzip and deflate bodies are decoded (``identity`` is asked for,
but a server may send them anyway). ``Response.push(sink, timeout_s)`` instead hands each piece
of the body to ``sink`` from the connection's own callback as it arrives (no task wakes up per
piece: the stream relay's fast path); ``pause_push``/``resume_push`` apply the sink's
backpressure to the socket, and the read timer then runs only while reading is on.

Also the errors every part of the client raises. Touches nothing but the connection that feeds
it (``gateway.upstream.http_client``), through the ``Carrier`` protocol.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from typing import Protocol

MAX_BUFFERED = 256 * 1024
"""Unread body bytes at which the socket stops being read until the reader catches up."""


class HttpError(Exception):
    """Connecting, sending or reading failed."""


class ConnectError(HttpError):
    """No connection could be made (refused, unresolvable, TLS handshake failed)."""


class HttpTimeout(HttpError):
    """A phase's timer ran out: connecting, the response's headers, or the next body bytes."""


class Headers(dict[str, str]):
    """Response headers by lower-cased name; repeated fields joined with ``", "``."""

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


RawHeader = tuple[bytes, bytes]


class Carrier(Protocol):
    """The connection a response arrives on, as the response sees it."""

    loop: asyncio.AbstractEventLoop

    def pause(self) -> None:
        """Stop reading the socket."""
        ...

    def resume(self) -> None:
        ...

    def done(self, *, reusable: bool) -> None:
        """The response is over: pool the connection if ``reusable``, else close it."""
        ...


class BodySink(Protocol):
    """Where a pushed body goes (``Response.push``); called from the connection's callbacks."""

    def body_data(self, data: bytes) -> None:
        """The next piece of the body."""
        ...

    def body_end(self) -> None:
        """The body ended whole."""
        ...

    def body_error(self, error: HttpError) -> None:
        """The body broke (or its read timer ran out); nothing follows."""
        ...


class Response:
    """One response: status and headers at once, the body as it arrives."""

    __slots__ = ("_buffered", "_chunks", "_conn", "_deadline", "_decoder", "_eof", "_error",
                 "_headers", "_loop", "_push_paused", "_push_timeout_s", "_raw_headers", "_sink",
                 "_timer", "_timer_at", "_waiter", "status")

    def __init__(self, conn: Carrier, status: int, raw_headers: list[RawHeader]) -> None:
        self._conn: Carrier | None = conn
        self._loop = conn.loop
        self.status = status
        self._raw_headers = raw_headers
        self._headers: Headers | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._error: HttpError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._sink: BodySink | None = None
        self._push_timeout_s = 0.0
        self._push_paused = False
        encoding = next((v for n, v in raw_headers if n.lower() == b"content-encoding"), b"")
        self._decoder = (zlib.decompressobj(wbits=47) if encoding.lower() in (b"gzip", b"deflate")
                         else None)

    @property
    def headers(self) -> Headers:
        """Decoded on first use: a successful JSON answer never needs them."""
        if self._headers is None:
            self._headers = Headers()
            for raw_name, raw_value in self._raw_headers:
                name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
                known = dict.get(self._headers, name)
                self._headers[name] = value if known is None else f"{known}, {value}"
        return self._headers

    # Fed by the connection -------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                self._fail(HttpError(f"undecodable {self.headers.get('content-encoding')} "
                                     f"body: {exc}"))
                return
            if not data:
                return
        if self._sink is not None:
            if not self._push_paused:  # paused earlier in this same read: the timer stays off
                self._deadline = self._loop.time() + self._push_timeout_s
            self._sink.body_data(data)
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > MAX_BUFFERED and self._conn is not None:
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                self._chunks.append(tail)
        self._eof = True
        if self._sink is not None:
            self._flush_to_sink()
        self._wake()

    def _fail(self, error: HttpError) -> None:
        if not self._eof and self._error is None:
            self._error = error
            if self._sink is not None:
                self._sink.body_error(error)
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # Read by the caller ----------------------------------------------------------------

    async def readany(self, timeout_s: float | None = None) -> bytes:
        """The next bytes of the body; ``b""`` at its end. Waits at most ``timeout_s``."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            await self._wait(timeout_s)
        data = self._chunks.popleft()
        self._buffered -= len(data)
        if self._buffered <= MAX_BUFFERED // 2 and self._conn is not None:
            self._conn.resume()
        return data

    async def read(self, timeout_s: float | None = None) -> bytes:
        """The whole body; ``timeout_s`` bounds each wait for more bytes."""
        parts = []
        while data := await self.readany(timeout_s):
            parts.append(data)
        return b"".join(parts)

    async def _wait(self, timeout_s: float | None) -> None:
        waiter = self._waiter = self._loop.create_future()
        if timeout_s is None:
            self._deadline = 0.0
        else:
            # One timer per response, not one per read: a stream reads every few milliseconds
            # and would otherwise arm and cancel a timer each time. The timer stays armed at an
            # older deadline; when it fires early it re-arms itself at the current one.
            self._move_deadline(timeout_s)
        try:
            await waiter
        finally:
            self._waiter = None

    # Pushed to a sink -----------------------------------------------------------------

    def push(self, sink: BodySink, timeout_s: float) -> None:
        """From now on hand the body to ``sink`` as it arrives, beginning with what is buffered;
        ``timeout_s`` bounds each wait for more bytes while reading is on (``body_error`` with
        ``HttpTimeout`` when it runs out). Ends with ``unpush`` or ``release``."""
        self._sink, self._push_timeout_s = sink, timeout_s
        self._flush_to_sink()
        if (self._sink is not None and not self._eof and self._error is None
                and not self._push_paused):  # the sink may have paused during the flush
            self.resume_push()

    def pause_push(self) -> None:
        """Stop reading the socket (the sink cannot take more yet); the read timer stops too."""
        self._push_paused = True
        self._deadline = 0.0
        if self._conn is not None:
            self._conn.pause()

    def resume_push(self) -> None:
        """Read the socket again, with a fresh read timer."""
        self._push_paused = False
        self._move_deadline(self._push_timeout_s)
        if self._conn is not None:
            self._conn.resume()

    def unpush(self) -> None:
        """Stop handing the body to the sink; what arrives after waits, unread, for release."""
        if self._sink is not None:
            self._sink = None
            self.pause_push()

    def _flush_to_sink(self) -> None:
        sink = self._sink
        while self._chunks and self._sink is sink and sink is not None:
            data = self._chunks.popleft()
            self._buffered -= len(data)
            sink.body_data(data)
        if self._sink is sink and sink is not None and not self._chunks:
            if self._error is not None:
                sink.body_error(self._error)
            elif self._eof:
                sink.body_end()

    def _check_pushed_deadline(self) -> None:
        if not self._deadline:
            return  # paused: ``resume_push`` arms the timer again
        if self._loop.time() >= self._deadline:
            self._fail(HttpTimeout("timed out"))
        else:
            self._arm(self._deadline)

    def _check_deadline(self) -> None:
        self._timer = None
        if self._sink is not None:
            self._check_pushed_deadline()
            return
        waiter = self._waiter
        if waiter is None or waiter.done() or not self._deadline:
            return  # nobody waits: the next wait arms a timer again
        if self._loop.time() >= self._deadline:
            waiter.set_exception(HttpTimeout("timed out"))
        else:
            self._arm(self._deadline)

    def _move_deadline(self, timeout_s: float) -> None:
        """The read deadline ``timeout_s`` from now; the timer is re-armed only when none is
        armed or it is armed later than that (a later one re-arms itself when it fires)."""
        self._deadline = deadline = self._loop.time() + timeout_s
        if self._timer is None or self._timer_at > deadline:  # first, or a shorter timeout
            self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._check_deadline)

    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    def release(self) -> None:
        """Done with the response: its connection goes back to the pool only when the body
        was read to its end and the server keeps the connection alive; else it is closed."""
        conn, self._conn = self._conn, None
        self._sink = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if conn is not None:
            conn.done(reusable=self._eof and self._error is None)
