"""Change notices between replicas over Redis pub/sub: publish a change, handle the peers'.

The API, for any capability whose changes the other replicas must learn of within a second::

    from gateway.core.notices import NOTICES, Notice

    notices = app[NOTICES]                          # always there; inert without Redis
    await notices.publish("cache", {"id": 42})      # never raises; False when it was not sent
    notices.subscribe("cache", on_entry)            # async def on_entry(n: Notice) -> None
    notices.on_resync(reread_everything)            # async def reread_everything() -> None
    await publish_once(settings.cluster, "keys")    # from a CLI command, outside a gateway

Topics in use: ``keys`` (a key created or revoked, a tenant created, changed or deleted: reload
keys and limits), ``routes`` (a routes file rebuilt: reload it), ``cache`` (new cache entries,
for the PostgreSQL-backed cache: add the entries named in ``data`` to the local index). A topic
is one channel, ``<key_prefix>:notices:<topic>``, carrying JSON ``{"origin": <replica id>,
"data": {...}}``; ``data`` must be JSON. A replica never handles its own notices: it applied the
change before publishing it. Subscribe and register resyncs in a cleanup context registered
after ``notices_context``; handlers may be added while it listens.

Delivery is at most once: pub/sub keeps nothing for a replica that was disconnected. So each
subscriber keeps its own backstop: the ``on_resync`` callbacks run after every reconnection
of the listener (notices may have been missed while it was away), and a subscriber also
re-reads in full on its own period (``[cluster] resync_interval_s``). A handler's failure is
logged and does not stop the listener. Without ``redis_url`` publishing does nothing and
nothing arrives: a lone replica has no peers.

``notices_context`` owns the listener task: it subscribes before ``yield`` (bounded by the
Redis timeout; when Redis is down, the listener keeps retrying in the background) and cancels
the task on exit. This module touches Redis only through ``gateway.core.redis_link``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from gateway.core.cluster import ClusterSettings
from gateway.core.redis_link import REDIS_LINK, RedisLink, RedisUnavailable

if TYPE_CHECKING:  # see redis_link.redis_errors: no client library without Redis configured
    from redis.asyncio.client import PubSub

log = logging.getLogger(__name__)

TOPICS = ("keys", "routes", "cache")
LISTEN_POLL_S = 1.0
"""How long one wait for a message lasts; only bounds how soon a cancelled listener notices."""


@dataclass(frozen=True, slots=True)
class Notice:
    topic: str
    origin: str
    """The id of the replica that published it."""
    data: Mapping[str, Any]


Handler = Callable[[Notice], Awaitable[None]]
Resync = Callable[[], Awaitable[None]]


class Notices:
    """Publishes this replica's notices and hands the peers' to the subscribed handlers."""

    def __init__(self, link: RedisLink | None, origin: str | None = None) -> None:
        self.link = link
        self.origin = origin or secrets.token_hex(8)
        self._handlers: dict[str, list[Handler]] = {}
        self._resyncs: list[Resync] = []
        self.subscribed = asyncio.Event()
        """Set while the listener is subscribed (tests and readiness wait on it)."""

    def channel(self, topic: str) -> str:
        prefix = self.link.prefix if self.link is not None else "gw"
        return f"{prefix}:notices:{topic}"

    def subscribe(self, topic: str, handler: Handler) -> None:
        if topic not in TOPICS:
            raise ValueError(f"unknown notice topic {topic!r} (known: {', '.join(TOPICS)})")
        self._handlers.setdefault(topic, []).append(handler)

    def on_resync(self, resync: Resync) -> None:
        self._resyncs.append(resync)

    async def publish(self, topic: str, data: Mapping[str, Any] | None = None) -> bool:
        """Tell the peers; False when there is no Redis or it did not take the notice."""
        if topic not in TOPICS:
            raise ValueError(f"unknown notice topic {topic!r} (known: {', '.join(TOPICS)})")
        link = self.link
        if link is None:
            return False
        message = orjson.dumps({"origin": self.origin, "data": dict(data or {})})
        try:
            await link.call(lambda: link.client.publish(self.channel(topic), message))
        except RedisUnavailable as exc:
            log.warning("notice %r not sent (%s): peers will see it at their next re-read",
                        topic, exc)
            return False
        return True

    async def handle(self, raw: bytes | str, channel: bytes | str) -> None:
        """One message from the channel: decoded, and handed to the topic's handlers."""
        topic = (channel.decode() if isinstance(channel, bytes) else channel).rsplit(":", 1)[-1]
        try:
            body = orjson.loads(raw)
            origin, data = str(body["origin"]), body["data"]
            if not isinstance(data, dict):
                raise TypeError("data is not an object")
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            log.warning("ignored a malformed notice on %s: %s", topic, exc)
            return
        if origin == self.origin:
            return
        notice = Notice(topic, origin, data)
        for handler in self._handlers.get(topic, ()):
            try:
                await handler(notice)
            except Exception:
                log.exception("handling notice %r from replica %s failed", topic, origin)

    async def resync(self) -> None:
        """Run every resync callback (after a reconnection: notices may have been missed)."""
        for resync in self._resyncs:
            try:
                await resync()
            except Exception:
                log.exception("re-reading after a reconnection failed")

    async def connect(self, link: RedisLink) -> PubSub:
        """A pub/sub connection subscribed to every topic's channel."""
        pubsub = link.client.pubsub(ignore_subscribe_messages=True)
        try:
            async with asyncio.timeout(link.timeout_s):
                await pubsub.psubscribe(self.channel("*"))
        except BaseException:
            await pubsub.aclose()
            raise
        self.subscribed.set()
        return pubsub

    async def listen(self, link: RedisLink, pubsub: PubSub | None) -> None:
        """Hand over messages for ever; reconnect (and resync) after any failure."""
        while True:
            try:
                if pubsub is None:
                    pubsub = await self.connect(link)
                    log.info("notices: subscribed again after a reconnection")
                    await self.resync()
                await self._pump(pubsub)
            except link.errors as exc:
                self.subscribed.clear()
                link.failed(exc)
                if pubsub is not None:
                    await _close(link, pubsub)
                pubsub = None
                await asyncio.sleep(link.settings.redis_retry_interval_s)
            except BaseException:
                if pubsub is not None:
                    await _close(link, pubsub)
                raise

    async def _pump(self, pubsub: PubSub) -> None:
        while True:
            message = await pubsub.get_message(timeout=LISTEN_POLL_S)
            if message is not None and message.get("type") == "pmessage":
                await self.handle(message["data"], message["channel"])


async def _close(link: RedisLink, pubsub: PubSub) -> None:
    with contextlib.suppress(*link.errors):
        await pubsub.aclose()


NOTICES = web.AppKey("notices", Notices)


async def publish_once(settings: ClusterSettings, topic: str,
                       data: Mapping[str, Any] | None = None) -> bool:
    """Publish one notice from outside a running gateway (the CLI); False without Redis or
    when it was not sent."""
    if settings.redis_url is None:
        return False
    link = RedisLink(settings)
    try:
        return await Notices(link).publish(topic, data)
    finally:
        await link.close()


async def notices_context(app: web.Application) -> AsyncIterator[None]:
    """``NOTICES`` on the app; with Redis, the listener task (see the module docstring)."""
    link = app.get(REDIS_LINK)
    notices = app[NOTICES] = Notices(link)
    if link is None:
        yield
        return
    pubsub: PubSub | None = None
    try:
        pubsub = await notices.connect(link)
    except link.errors as exc:
        link.failed(exc)
    listener = asyncio.create_task(notices.listen(link, pubsub), name="notices-listener")
    try:
        yield
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
