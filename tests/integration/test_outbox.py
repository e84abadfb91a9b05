"""The outbox relay against a real PostgreSQL and a real NATS JetStream server."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js.api import StreamConfig
from psycopg_pool import AsyncConnectionPool

from accounts_service import db
from accounts_service.bus import Bus, PublishFailed
from accounts_service.outbox import OutboxRelay
from devstack.nats import NatsServer

SUBJECT = "accounts.thumbnail.requested"


@pytest.fixture
async def stream(own_nats: NatsServer) -> AsyncIterator[str]:
    """A fresh ACCOUNTS stream; yields the NATS URL."""
    nc = await nats.connect(own_nats.url)
    js = nc.jetstream()
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_stream("ACCOUNTS")
    await js.add_stream(StreamConfig(name="ACCOUNTS", subjects=["accounts.>"]))
    await nc.close()
    yield own_nats.url


async def add_events(pool: AsyncConnectionPool[db.Conn], count: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    async with pool.connection() as conn, conn.transaction():
        for event_id in ids:
            await db.insert_event(conn, event_id, SUBJECT, event_id.bytes, uuid.uuid4())
    return ids


async def stream_msg_ids(url: str) -> list[str]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    info = await js.stream_info("ACCOUNTS")
    ids = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg("ACCOUNTS", seq)
        ids.append((msg.headers or {})["Nats-Msg-Id"])
    await nc.close()
    return ids


async def unpublished(pool: AsyncConnectionPool[db.Conn]) -> int:
    async with pool.connection() as conn:
        return await db.pending_events(conn)


async def wait_all_published(pool: AsyncConnectionPool[db.Conn], within: float) -> float:
    """Seconds until the outbox is empty; TimeoutError after `within` seconds."""
    started = time.monotonic()
    async with asyncio.timeout(within):
        while await unpublished(pool):  # noqa: ASYNC110 (the database has no event to await)
            await asyncio.sleep(0.02)  # poll with a deadline
    return time.monotonic() - started


async def test_migrations_apply_once(pool: AsyncConnectionPool[db.Conn]) -> None:
    assert await db.migrate(pool) == []


async def test_events_go_out_with_their_id_and_are_marked(
    pool: AsyncConnectionPool[db.Conn], stream: str, dsn: str
) -> None:
    ids = await add_events(pool, 3)
    bus = Bus(stream)
    relay = OutboxRelay(pool, bus, dsn, poll_seconds=30)
    assert await relay.publish_pending() == 3
    assert await stream_msg_ids(stream) == [str(i) for i in ids]
    assert await unpublished(pool) == 0
    await bus.close()


async def test_concurrent_relays_publish_each_event_once(
    pool: AsyncConnectionPool[db.Conn], stream: str, dsn: str
) -> None:
    ids = await add_events(pool, 200)
    buses = [Bus(stream) for _ in range(4)]
    relays = [OutboxRelay(pool, bus, dsn, poll_seconds=30, batch=10) for bus in buses]

    async def drain(relay: OutboxRelay) -> int:
        total = 0
        while sent := await relay.publish_pending():
            total += sent
        return total

    counts = await asyncio.gather(*(drain(r) for r in relays))
    assert sum(counts) == 200
    assert sorted(await stream_msg_ids(stream)) == sorted(str(i) for i in ids)
    for bus in buses:
        await bus.close()


async def test_crash_between_publish_and_mark_makes_no_duplicate(
    pool: AsyncConnectionPool[db.Conn], stream: str, dsn: str
) -> None:
    [event_id] = await add_events(pool, 1)
    bus = Bus(stream)
    await bus.publish(SUBJECT, event_id.bytes, str(event_id))  # published, never marked
    relay = OutboxRelay(pool, bus, dsn, poll_seconds=30)
    assert await relay.publish_pending() == 1
    assert await stream_msg_ids(stream) == [str(event_id)]
    await bus.close()


async def test_events_wait_in_the_outbox_while_nats_is_down(
    pool: AsyncConnectionPool[db.Conn], stream: str, dsn: str, own_nats: NatsServer
) -> None:
    bus = Bus(stream)
    await bus.connect()
    own_nats.stop()
    try:
        ids = await add_events(pool, 2)
        relay = OutboxRelay(pool, bus, dsn, poll_seconds=30)
        with pytest.raises(PublishFailed):
            await relay.publish_pending()
        assert await unpublished(pool) == 2
    finally:
        own_nats.start()
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await wait_all_published(pool, 30)
    stop.set()
    await task
    assert await stream_msg_ids(stream) == [str(i) for i in ids]
    await bus.close()


async def test_relay_wakes_on_notify_not_only_by_polling(
    pool: AsyncConnectionPool[db.Conn], stream: str, dsn: str
) -> None:
    bus = Bus(stream)
    relay = OutboxRelay(pool, bus, dsn, poll_seconds=60)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await add_events(pool, 1)
    await wait_all_published(pool, 10)  # the relay is running and goes idle for 60 s
    await add_events(pool, 1)
    elapsed = await wait_all_published(pool, 10)
    stop.set()
    await task
    await bus.close()
    assert elapsed < 10, "not woken by NOTIFY (poll interval is 60 s)"
