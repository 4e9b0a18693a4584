"""A lean HTTP/1.1 client for provider calls: pooled keep-alive connections, one write per
request, responses parsed by httptools (llhttp, in C), timeouts as single timers.

Why not aiohttp's client: the gateway makes one upstream call per request, and aiohttp's client
spent more Python per call (request and response objects, header multidicts, payload and timer
machinery) than the rest of the gateway's own request path. This client does what a provider
call needs and nothing else:

- ``HttpClient.request`` sends one request on an idle pooled connection of the origin (scheme,
  host, port) or a new one (TLS with the system's default context for ``https``), and returns a
  ``Response`` once the status line and headers are in. A pooled connection the server closed
  while it sat idle is detected and the request is sent again on a new one, once, when no byte
  of a response had arrived.
- The ``Response`` (``gateway.upstream.http_response``) is read as it arrives or pushed to a
  sink from the connection's own callbacks; the body pieces of one socket read (a provider
  writes an HTTP chunk per event) reach it as one piece.
- ``Response.release`` returns a fully read, keep-alive connection to the pool; anything else
  (a release before the end, or a broken response) closes it, so no stale bytes are ever reused.

Every failure is an ``HttpError`` (``ConnectError`` for connecting, ``HttpTimeout`` for a timer
that ran out); ``gateway.upstream.calls`` translates them into failover kinds. No proxies, no
redirects, no cookies: providers need none of them.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httptools

from gateway.upstream.http_response import (
    ConnectError,
    HttpError,
    HttpTimeout,
    RawHeader,
    Response,
)

IDLE_TIMEOUT_S = 30.0
"""A pooled connection idle longer than this is closed rather than reused."""
MAX_IDLE_PER_ORIGIN = 256
_URL_CACHE_SIZE = 1024


class _StaleConnection(HttpError):
    """A reused connection ended before any byte of the response: safe to send again."""


_Origin = tuple[str, str, int]


class _Target:
    """A URL split once: the origin to connect to, and the request line's target and host."""

    __slots__ = ("host_header", "origin", "path")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpError(f"unsupported URL {url!r}: only http and https")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.origin: _Origin = (parts.scheme, parts.hostname, port)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.host_header = parts.netloc.rpartition("@")[2]


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(HttpTimeout("timed out"))


class _Connection(asyncio.Protocol):
    """One keep-alive connection; it carries one request at a time."""

    def __init__(self, client: HttpClient, origin: _Origin, loop: asyncio.AbstractEventLoop):
        self.client = client
        self.origin = origin
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._paused = False
        self._keep_alive = False
        self._received = False
        self._complete = False
        self._interim = False
        self._header_items: list[RawHeader] = []
        self._bodies: list[bytes] = []
        """Body pieces of the bytes being parsed, handed over together (``_hand_over``)."""
        self._head: asyncio.Future[Response] | None = None
        self._response: Response | None = None

    # asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._head is None and self._response is None:  # bytes nobody asked for
            self.abort()
            return
        self._received = True
        error = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:  # a callback's error too, as httptools wraps it
            error = HttpError(f"malformed response: {exc}")
        try:
            self._hand_over()  # the pieces before an error still count
        except Exception as exc:  # whatever reads the body failed: this response, not the loop
            error = error or HttpError(f"reading the response failed: {exc}")
        if error is not None:
            self._broken(error)

    def eof_received(self) -> bool | None:
        return None  # close the transport; ``connection_lost`` follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.client._open.discard(self)
        response = self._response
        if response is not None and not self._complete and self._head is None:
            length = response.headers.get("content-length")
            chunked = "chunked" in (response.headers.get("transfer-encoding") or "")
            if length is None and not chunked:  # delimited by the connection's end
                self._complete = True
                response._finish()
                return
        error: HttpError
        if self._head is not None and not self._received:
            error = _StaleConnection("the connection closed before a response")
        else:
            error = HttpError(f"the connection closed mid-response: {exc or 'EOF'}")
        self._broken(error, close=False)

    # httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        # httptools reports a chunked body's trailers here too: kept, they would become the
        # headers of the connection's next response. Nothing the gateway reads comes in them.
        if self._response is None:
            self._header_items.append((name, value))

    def on_headers_complete(self) -> None:
        items, self._header_items = self._header_items, []
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue, 103 Early Hints): skip it
            self._interim = True
            return
        self._keep_alive = bool(self.parser.should_keep_alive())
        response = self._response = Response(self, status, items)
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_result(response)

    def on_body(self, body: bytes) -> None:
        # A read holding several HTTP chunks (a provider writes one per event; a busy gateway
        # reads several at once) reaches the response as one piece: one pass of the stream's
        # decoder, and one write to the client, for the lot.
        self._bodies.append(body)

    def _hand_over(self) -> None:
        bodies = self._bodies
        if bodies:
            data = bodies[0] if len(bodies) == 1 else b"".join(bodies)
            bodies.clear()
            if self._response is not None:
                self._response._feed(data)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._hand_over()
        self._complete = True
        if self._response is not None:
            self._response._finish()

    # Used by the client and the response -----------------------------------------------

    def send(self, data: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None
        self._received = self._complete = self._interim = False
        self._response = None
        self._head = self.loop.create_future()
        self.transport.write(data)
        return self._head

    def pause(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def done(self, *, reusable: bool) -> None:
        self._response = None
        if reusable and self._complete and self._keep_alive and not self.closed:
            self.resume()
            self.client._put_idle(self)
        else:
            self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _broken(self, error: HttpError, *, close: bool = True) -> None:
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_exception(error)
        if self._response is not None:
            self._response._fail(error)
        if close:
            self.abort()


class HttpClient:
    """Pooled connections per origin; ``request`` is the one operation."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None,
                 idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        self._ssl = ssl_context
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._targets: dict[str, _Target] = {}
        self._idle_timeout_s = idle_timeout_s
        self._open: set[_Connection] = set()
        self.closed = False

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str], body: bytes = b"",
        connect_timeout_s: float | None = None, first_byte_timeout_s: float | None = None,
    ) -> Response:
        """Send and return once the response's headers are in (its body is read from it)."""
        if self.closed:
            raise HttpError("the client is closed")
        target = self._target(url)
        data = _encode(method, target, headers, body)
        for attempt in (1, 2):
            conn = self._take_idle(target.origin) if attempt == 1 else None
            pooled = conn is not None
            if conn is None:
                conn = await self._connect(target.origin, connect_timeout_s)
            head = conn.send(data)
            timer = (conn.loop.call_later(first_byte_timeout_s, _expire, head)
                     if first_byte_timeout_s is not None else None)
            try:
                return await head
            except _StaleConnection:
                conn.abort()
                if not pooled:
                    raise HttpError("the connection closed before a response") from None
            except BaseException:
                conn.abort()
                raise
            finally:
                if timer is not None:
                    timer.cancel()
        raise AssertionError("unreachable")

    async def close(self) -> None:
        self.closed = True
        for conn in list(self._open):
            conn.abort()
        self._open.clear()
        self._idle.clear()

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) >= _URL_CACHE_SIZE:
                self._targets.clear()
            target = self._targets[url] = _Target(url)
        return target

    def _take_idle(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self._idle_timeout_s:
                return conn
            conn.abort()
            self._open.discard(conn)
        return None

    def _put_idle(self, conn: _Connection) -> None:
        if self.closed:
            conn.abort()
            return
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            conn.abort()
            self._open.discard(conn)
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def _connect(self, origin: _Origin, timeout_s: float | None) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = None
        if scheme == "https":
            tls = self._ssl = self._ssl or ssl.create_default_context()
        conn = _Connection(self, origin, loop)
        try:
            async with asyncio.timeout(timeout_s):
                await loop.create_connection(
                    lambda: conn, host, port, ssl=tls, server_hostname=host if tls else None)
        except TimeoutError as exc:
            raise HttpTimeout(f"connecting to {host}:{port} took over {timeout_s} s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        self._open.add(conn)
        return conn


def _encode(method: str, target: _Target, headers: Mapping[str, str], body: bytes) -> bytes:
    lines = [f"{method} {target.path} HTTP/1.1", f"Host: {target.host_header}",
             f"Content-Length: {len(body)}", "Accept-Encoding: identity"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise HttpError(f"header {name!r} holds a line break or colon")
        lines.append(f"{name}: {value}")
    lines.append("\r\n")
    try:
        return "\r\n".join(lines).encode("latin-1") + body
    except UnicodeEncodeError as exc:
        raise HttpError(f"a header is not latin-1: {exc}") from exc
