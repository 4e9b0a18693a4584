"""Guards on client connections, which aiohttp's server would otherwise hold open for ever.

aiohttp reads a request's head and body with no deadline and keeps an idle connection for an
hour. ``gateway serve`` runs its app on a ``GuardedRunner`` whose connections
(``GuardedHandler``) keep these limits, from ``[server]``:

- ``header_timeout_s``: from a request's first byte until its whole head has arrived; past it
  the client gets a 408 in OpenAI's error JSON and the connection closes.
- ``idle_timeout_s``: a connection with no request under way (before the first, between two)
  is closed, silently: there is nothing to answer.
- ``max_connections``: a connection beyond the cap gets a 503 in the same JSON and is closed.
- ``body_timeout_s`` is kept by ``gateway.api.body.read_body`` (408 while a response can still
  be sent); ``write_timeout_s`` by the stream relay and at each answer's end
  (``gateway.pipeline.streaming.client_reads``: a client that reads nothing while its socket is
  full is cut, counted here as ``write_timeout``).

A request aiohttp's parser refuses (an oversized header, a malformed head) gets OpenAI's error
JSON instead of aiohttp's plain text, and its text (which quotes the header's value, a key
perhaps) is never logged. Every connection closed by a guard is counted in
``gateway_client_connections_closed_total{reason}``; ``gateway_client_connections`` is how many
are open. Touches the client sockets and the app's metrics registry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Literal

import orjson
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.core.config import ServerSettings
from gateway.core.errors import (
    GatewayError,
    HeadersTooLarge,
    InvalidRequest,
    RequestTimeout,
    ServiceUnavailable,
)

log = logging.getLogger(__name__)

CloseReason = Literal["header_timeout", "body_timeout", "idle_timeout", "over_capacity",
                      "write_timeout"]
CLOSE_REASONS: tuple[CloseReason, ...] = (
    "header_timeout", "body_timeout", "idle_timeout", "over_capacity", "write_timeout")


class ConnectionGuard:
    """The limits, how many connections are open, and what the guards closed."""

    def __init__(self, settings: ServerSettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.open = 0
        closed = Counter("gateway_client_connections_closed",
                         "Client connections closed or refused by a guard, by reason.",
                         ("reason",), registry=registry)
        self._closed = {reason: closed.labels(reason) for reason in CLOSE_REASONS}
        Gauge("gateway_client_connections", "Client connections open now.",
              registry=registry).set_function(lambda: self.open)

    def closed(self, reason: CloseReason) -> None:
        self._closed[reason].inc()


CONNECTION_GUARD = web.AppKey("connection_guard", ConnectionGuard)


def raw_answer(error: GatewayError) -> bytes:
    """A whole HTTP/1.1 answer for ``error``, for a connection with no request to answer."""
    body = orjson.dumps(error.body())
    head = (f"HTTP/1.1 {error.status} {_REASONS.get(error.status, 'Error')}\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("ascii") + body


_REASONS = {408: "Request Timeout", 503: "Service Unavailable"}


class GuardedHandler(RequestHandler):
    """aiohttp's connection protocol with the guards above.

    It counts request heads parsed against answers finished: while they are equal no request
    is under way, so the idle timer runs; the next byte starts the head's timer instead.
    """

    __slots__ = ("_answered", "_deadline", "_ending", "_guard", "_heads", "_timer", "_timing")

    def __init__(self, manager: web.Server, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._heads = 0
        self._answered = 0
        self._ending = False
        self._timer: asyncio.TimerHandle | None = None
        self._timing: Callable[[], None] | None = None
        self._deadline = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        guard = self._guard
        guard.open += 1
        if guard.open > guard.settings.max_connections:
            guard.closed("over_capacity")
            self._close_with(ServiceUnavailable(
                "The gateway has too many open connections; retry shortly.",
                code="too_many_connections"))
            return
        self._arm(guard.settings.idle_timeout_s, self._idle_expired)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._guard.open -= 1
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._ending:
            return  # the rest of an unread body, read and dropped for at most lingering_time
        if self._request_count > before:
            self._heads += self._request_count - before
            self._disarm()  # a whole head: its handler (and read_body) take it from here
        elif self._heads == self._answered and self._timing != self._head_expired:
            self._arm(self._guard.settings.header_timeout_s, self._head_expired)

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._answered += 1
            self._ending = self._ending or not resp.keep_alive
            if self._heads == self._answered and not self._ending:
                self._arm(self._guard.settings.idle_timeout_s, self._idle_expired)

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse, in OpenAI's error JSON."""
        if request.writer.output_size > 0:
            # As aiohttp's own: an answer already begun cannot be followed by another.
            raise ConnectionError("the response had begun; the connection is dropped")
        error: GatewayError
        if isinstance(exc, LineTooLong):
            error = HeadersTooLarge("A request line or header is too large.")
        elif status < 500:
            error = InvalidRequest("The request is not valid HTTP.", code="bad_http_request")
        else:
            error = GatewayError("The gateway hit an internal error.")
        # Not the exception's text: it quotes the offending bytes, an API key perhaps.
        log.info("refused a request from %s: %s (HTTP %d)", request.remote,
                 type(exc).__name__ if exc else "error", error.status)
        response = web.json_response(error.body(), status=error.status)
        response.force_close()
        return response

    def _arm(self, delay_s: float, expired: Callable[[], None]) -> None:
        """Call ``expired`` in ``delay_s`` unless disarmed or re-armed first.

        Arming happens twice per request, so it only moves a deadline: the one timer is
        replaced only when the new deadline is earlier, and otherwise, when it fires early,
        sets itself again for the deadline."""
        self._deadline = self._loop.time() + delay_s
        self._timing = expired
        timer = self._timer
        if timer is None or timer.when() > self._deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(self._deadline, self._fire)

    def _disarm(self) -> None:
        self._timing = None  # the timer, if any, fires and finds nothing to do

    def _fire(self) -> None:
        self._timer = None
        expired = self._timing
        if expired is None:
            return
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._fire)
            return
        self._timing = None
        expired()

    def _head_expired(self) -> None:
        if self._heads == self._answered:
            self._guard.closed("header_timeout")
            limit_s = self._guard.settings.header_timeout_s
            self._close_with(RequestTimeout(
                f"The request head did not arrive within {limit_s:g} s."))

    def _idle_expired(self) -> None:
        if self._heads == self._answered:
            self._guard.closed("idle_timeout")
            self.force_close()

    def _close_with(self, error: GatewayError) -> None:
        if self.transport is not None:
            self.transport.write(raw_answer(error))
        self.force_close()  # the transport sends what it holds, then closes


class GuardedServer(web.Server):
    """aiohttp's server, making ``GuardedHandler`` connections."""

    def __init__(self, base: web.Server, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(base.request_handler, request_factory=base.request_factory,
                         handler_cancellation=base.handler_cancellation,
                         loop=asyncio.get_running_loop(), **kwargs)
        self._guard = guard

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, self._guard, loop=self._loop, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """An ``AppRunner`` whose server guards its connections with the app's ``ConnectionGuard``."""

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        guard = self.app[CONNECTION_GUARD]
        # aiohttp's own keep-alive close stays as a backstop behind the guards' timers. The
        # handler settings (``_kwargs``) and ``_request_count`` are aiohttp 3 internals with no
        # public equivalent; tests/test_connections.py catches a release that moves them.
        backstop_s = guard.settings.idle_timeout_s + guard.settings.header_timeout_s + 1
        # What is left of a body that was not read is dropped for a bounded time, then closed.
        linger_s = min(guard.settings.body_timeout_s, 10.0)
        return GuardedServer(base, guard, **{**base._kwargs, "keepalive_timeout": backstop_s,
                                             "lingering_time": linger_s})
