"""Change notices between replicas (gateway/core/notices.py), over a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from gateway.core.cluster import ClusterSettings
from gateway.core.notices import Notice, Notices
from gateway.core.redis_link import RedisLink
from tests.redis_server import RedisServer
from tests.tasks import until

WAIT_S = 5.0


def link_to(server: RedisServer, **extra: float) -> RedisLink:
    return RedisLink(ClusterSettings(redis_url=server.url, redis_retry_interval_s=0.05,
                                     **extra))  # type: ignore[arg-type]


@asynccontextmanager
async def replica(server: RedisServer) -> AsyncIterator[Notices]:
    """One replica's notices, listening until the block ends."""
    link = link_to(server)
    notices = Notices(link)
    task = asyncio.create_task(notices.listen(link, await notices.connect(link)))
    try:
        yield notices
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await link.close()


class Inbox:
    def __init__(self) -> None:
        self.notices: list[Notice] = []
        self.arrived = asyncio.Event()

    async def __call__(self, notice: Notice) -> None:
        self.notices.append(notice)
        self.arrived.set()

    async def next(self) -> Notice:
        await asyncio.wait_for(self.arrived.wait(), WAIT_S)
        self.arrived.clear()
        return self.notices[-1]


async def test_a_notice_published_by_one_replica_reaches_the_others(
    redis_server: RedisServer,
) -> None:
    async with replica(redis_server) as a, replica(redis_server) as b, \
            replica(redis_server) as c:
        inbox_b, inbox_c = Inbox(), Inbox()
        b.subscribe("keys", inbox_b)
        c.subscribe("keys", inbox_c)
        assert await a.publish("keys", {"key_id": "k_1"})
        for inbox in (inbox_b, inbox_c):
            notice = await inbox.next()
            assert (notice.topic, notice.origin, dict(notice.data)) == (
                "keys", a.origin, {"key_id": "k_1"})


async def test_a_replica_does_not_handle_its_own_notices(redis_server: RedisServer) -> None:
    async with replica(redis_server) as a, replica(redis_server) as b:
        inbox = Inbox()
        a.subscribe("cache", inbox)
        assert await a.publish("cache", {"id": 1})
        assert await b.publish("cache", {"id": 2})
        notice = await inbox.next()  # one channel keeps its order: a's own came first
        assert [dict(n.data) for n in inbox.notices] == [{"id": 2}]
        assert notice.origin == b.origin


async def test_topics_are_kept_apart(redis_server: RedisServer) -> None:
    async with replica(redis_server) as a, replica(redis_server) as b:
        keys, routes = Inbox(), Inbox()
        b.subscribe("keys", keys)
        b.subscribe("routes", routes)
        await a.publish("routes", {"file": "routes.toml"})
        assert (await routes.next()).data == {"file": "routes.toml"}
        assert keys.notices == []


async def test_a_malformed_message_is_ignored_and_the_listener_goes_on(
    redis_server: RedisServer,
) -> None:
    async with replica(redis_server) as a, replica(redis_server) as b:
        inbox = Inbox()
        b.subscribe("keys", inbox)
        assert a.link is not None
        await a.link.client.publish(a.channel("keys"), b"not json")
        await a.link.client.publish(a.channel("keys"), b'{"origin": "x", "data": [1]}')
        await a.publish("keys", {"ok": True})
        assert (await inbox.next()).data == {"ok": True}
        assert len(inbox.notices) == 1


async def test_a_failing_handler_does_not_stop_the_others(redis_server: RedisServer) -> None:
    async def broken(notice: Notice) -> None:
        raise RuntimeError("handler bug")

    async with replica(redis_server) as a, replica(redis_server) as b:
        inbox = Inbox()
        b.subscribe("keys", broken)
        b.subscribe("keys", inbox)
        await a.publish("keys", {"n": 1})
        await a.publish("keys", {"n": 2})
        await inbox.next()
        if len(inbox.notices) < 2:
            await inbox.next()
        assert [n.data["n"] for n in inbox.notices] == [1, 2]


async def test_the_listener_reconnects_after_redis_restarts_and_resyncs(
    redis_server: RedisServer,
) -> None:
    async with replica(redis_server) as a, replica(redis_server) as b:
        inbox, resynced = Inbox(), asyncio.Event()

        async def resync() -> None:
            resynced.set()

        b.subscribe("keys", inbox)
        b.on_resync(resync)
        redis_server.stop()
        assert not await a.publish("keys", {"lost": True})  # Redis is gone: not sent, no raise
        redis_server.start()
        await asyncio.wait_for(resynced.wait(), WAIT_S)
        await asyncio.wait_for(b.subscribed.wait(), WAIT_S)
        # a's link rests, then retries
        await until(lambda: a.publish("keys", {"after": True}), "a publishes again", WAIT_S)
        assert (await inbox.next()).data == {"after": True}


async def test_without_redis_publishing_does_nothing() -> None:
    notices = Notices(None)
    assert not await notices.publish("keys", {"key_id": "k_1"})


async def test_an_unknown_topic_is_refused() -> None:
    notices = Notices(None)
    with pytest.raises(ValueError, match="unknown notice topic"):
        await notices.publish("gossip", {})
    with pytest.raises(ValueError, match="unknown notice topic"):
        notices.subscribe("gossip", Inbox())
