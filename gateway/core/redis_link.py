"""The Redis connection a replica shares with its peers: one client, its health, its errors.

``RedisLink`` owns one ``redis.asyncio.Redis`` client (a pool of connections) and is the one place
where the client's exceptions become ``RedisUnavailable``. ``call`` runs one command under
``redis_timeout_ms``; when Redis fails, the link is *down* for ``redis_retry_interval_s``: calls
then raise ``RedisUnavailable`` at once, without touching the network, so a dead or unreachable
Redis costs a request nothing past the first failure. The next call after that interval tries
again on a fresh connection from the pool, which is how the link reconnects on its own. Going
down and coming back are logged once each (the URL's password redacted) and reported to
``on_change`` (the metrics).

``redis_context`` is the cleanup context: it opens the link when ``[cluster] redis_url`` is set
(Redis being down at start is not fatal: the configured mode applies until it answers) and closes
the client last. It touches the network only through the client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from aiohttp import web

from gateway.core.cluster import ClusterSettings

if TYPE_CHECKING:  # the client library loads only where Redis is configured (redis_errors)
    import redis.asyncio as redis

log = logging.getLogger(__name__)

T = TypeVar("T")


class RedisUnavailable(Exception):
    """Redis did not answer in time, refused the connection, or is resting after doing so."""


def redis_errors() -> tuple[type[BaseException], ...]:
    """What a Redis round trip raises when Redis fails.

    The client library is imported here and in ``_client``, not with this module: it (and the
    OpenTelemetry SDK it imports) costs a gateway without ``[cluster] redis_url`` ~10 MiB.
    """
    from redis.exceptions import RedisError

    return (RedisError, OSError, TimeoutError)


class RedisLink:
    """One Redis client and whether Redis is up; see the module docstring."""

    def __init__(self, settings: ClusterSettings, client: redis.Redis | None = None) -> None:
        if settings.redis_url is None:
            raise ValueError("RedisLink needs [cluster] redis_url")
        self.settings = settings
        self.client = client or _client(settings, settings.redis_url)
        self.errors = redis_errors()
        self.timeout_s = settings.redis_timeout_ms / 1000
        self.prefix = settings.key_prefix
        self._down_until = 0.0
        self.up = True
        self.on_change: Callable[[bool], None] | None = None

    def key(self, tenant: str, name: str) -> str:
        """``<prefix>:{tenant}:name``: the braces make every key of a tenant one cluster slot."""
        return f"{self.prefix}:{{{tenant}}}:{name}"

    @property
    def resting(self) -> bool:
        """Down, and not yet due for another try."""
        return not self.up and time.monotonic() < self._down_until

    async def call(self, command: Callable[[], Awaitable[T]]) -> T:
        """Run ``command`` (one round trip) within the timeout, or raise ``RedisUnavailable``."""
        if self.resting:
            raise RedisUnavailable(f"Redis at {self.settings.redis_shown} is unavailable")
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await command()
        except self.errors as exc:
            self.failed(exc)
            raise RedisUnavailable(f"Redis at {self.settings.redis_shown}: {exc}") from exc
        if not self.up:
            self._change(True)
            log.warning("Redis at %s answers again", self.settings.redis_shown)
        return result

    def failed(self, exc: BaseException) -> None:
        """Rest the link after a failure (also for failures seen outside ``call``)."""
        self._down_until = time.monotonic() + self.settings.redis_retry_interval_s
        if self.up:
            self._change(False)
            log.warning("Redis at %s is unavailable (%s): %s until it answers",
                        self.settings.redis_shown, type(exc).__name__,
                        "admitting on this replica's own counters" if self.settings.fail_open
                        else "refusing requests with 503")

    def _change(self, up: bool) -> None:
        self.up = up
        if self.on_change is not None:
            self.on_change(up)

    async def close(self) -> None:
        await self.client.aclose()


def _client(settings: ClusterSettings, url: str) -> redis.Redis:
    import redis.asyncio as redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    # A bounded pool: Redis runs one command at a time anyway, and a burst of requests then
    # waits for a connection (inside its deadline) instead of opening hundreds.
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=settings.redis_pool_size,
        timeout=settings.redis_timeout_ms / 1000,
        socket_timeout=settings.redis_timeout_ms / 1000,
        socket_connect_timeout=settings.redis_connect_timeout_ms / 1000,
        # Failures are handled by the link (rest, then try again), not retried in a request.
        retry=Retry(NoBackoff(), 0),
    )
    return redis.Redis.from_pool(pool)  # the client owns the pool: closing it closes both


REDIS_LINK = web.AppKey("redis_link", RedisLink)
CLUSTER_SETTINGS = web.AppKey("cluster_settings", ClusterSettings)


async def redis_context(app: web.Application) -> AsyncIterator[None]:
    """Open the Redis link when one is configured; close it after everything that uses it."""
    settings = app[CLUSTER_SETTINGS]
    if settings.redis_url is None:
        yield
        return
    link = app[REDIS_LINK] = RedisLink(settings)
    try:
        await link.call(link.client.ping)
        log.info("cluster: Redis at %s (%s)", settings.redis_shown, settings.redis_mode)
    except RedisUnavailable:
        pass  # logged by the link; the configured mode applies until Redis answers
    try:
        yield
    finally:
        await link.close()
