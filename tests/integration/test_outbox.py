"""The outbox relay against a real PostgreSQL and a real NATS JetStream server."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Mapping

import nats
import psycopg
import pytest
from nats.js.api import StreamConfig

from accounts_service.adapters import db
from accounts_service.adapters.bus import Bus
from accounts_service.background.relay import OutboxRelay
from accounts_service.errors import PublishFailed
from devstack.nats import NatsServer

SUBJECT = "accounts.thumbnail.requested"


RELAY_APP = "relay-under-test"


class WatchedBus(Bus):
    """A real Bus that, as each publish starts, notes how many of the relay's sessions are
    inside a transaction (`idle in transaction` while it waits for NATS, if any)."""

    def __init__(self, url: str, dsn: str) -> None:
        super().__init__(url, publish_timeout=0.5)
        self._dsn = dsn
        self.open_transactions: list[int] = []

    async def publish(
        self, subject: str, payload: bytes, msg_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        async with await psycopg.AsyncConnection.connect(self._dsn, autocommit=True) as probe:
            cur = await probe.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = %s AND xact_start IS NOT NULL",
                (RELAY_APP,),
            )
            row = await cur.fetchone()
        assert row is not None
        self.open_transactions.append(int(row[0]))
        await super().publish(subject, payload, msg_id, headers)


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


async def add_events(pool: db.Pool, count: int) -> list[uuid.UUID]:
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


async def unpublished(pool: db.Pool) -> int:
    async with pool.connection() as conn:
        return await db.pending_events(conn)


async def wait_all_published(pool: db.Pool, within: float) -> float:
    """Seconds until the outbox is empty; TimeoutError after `within` seconds."""
    started = time.monotonic()
    async with asyncio.timeout(within):
        while await unpublished(pool):  # noqa: ASYNC110 (the database has no event to await)
            await asyncio.sleep(0.02)  # poll with a deadline
    return time.monotonic() - started


async def test_migrations_apply_once(pool: db.Pool) -> None:
    assert await db.migrate(pool) == []


async def test_events_go_out_with_their_id_and_are_marked(
    pool: db.Pool, stream: str, dsn: str
) -> None:
    ids = await add_events(pool, 3)
    bus = Bus(stream)
    relay = OutboxRelay(pool, bus, dsn, poll_seconds=30)
    assert await relay.publish_pending() == 3
    assert await stream_msg_ids(stream) == [str(i) for i in ids]
    assert await unpublished(pool) == 0
    await bus.close()


async def test_concurrent_relays_publish_each_event_once(
    pool: db.Pool, stream: str, dsn: str
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
    pool: db.Pool, stream: str, dsn: str
) -> None:
    [event_id] = await add_events(pool, 1)
    bus = Bus(stream)
    await bus.publish(SUBJECT, event_id.bytes, str(event_id))  # published, never marked
    relay = OutboxRelay(pool, bus, dsn, poll_seconds=30)
    assert await relay.publish_pending() == 1
    assert await stream_msg_ids(stream) == [str(event_id)]
    await bus.close()


async def test_events_wait_in_the_outbox_while_nats_is_down(
    pool: db.Pool, stream: str, dsn: str, own_nats: NatsServer
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
    pool: db.Pool, stream: str, dsn: str
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


async def attempts(pool: db.Pool) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT coalesce(sum(attempts), 0) FROM outbox")
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_no_transaction_is_open_while_the_relay_waits_for_nats(
    pool: db.Pool, stream: str, dsn: str, own_nats: NatsServer
) -> None:
    """NATS is down and the relay keeps retrying: at every publish attempt, not one of the
    relay's sessions is inside a transaction (the claim was committed before NATS was called)."""
    bus = WatchedBus(stream, dsn)
    await bus.connect()
    relay_pool: db.Pool = db.Pool(
        dsn, min_size=2, max_size=2, open=False, kwargs={"application_name": RELAY_APP}
    )
    async with relay_pool:
        relay = OutboxRelay(relay_pool, bus, dsn, poll_seconds=0.2)
        stop = asyncio.Event()
        own_nats.stop()
        try:
            await add_events(pool, 3)
            task = asyncio.create_task(relay.run(stop))
            async with asyncio.timeout(30):
                while await attempts(pool) < 3:  # noqa: ASYNC110 (no event to await)
                    await asyncio.sleep(0.05)  # poll with a deadline
            assert await unpublished(pool) == 3, "nothing was marked while NATS was down"
        finally:
            own_nats.start()
        await wait_all_published(pool, 30)
        stop.set()
        await task
    assert len(bus.open_transactions) >= 3 + 3  # 3 failed attempts at least, then 3 publishes
    assert set(bus.open_transactions) == {0}, bus.open_transactions
    await bus.close()


async def test_a_batch_leased_by_a_relay_that_died_goes_out_once_the_lease_ends(
    pool: db.Pool, stream: str, dsn: str
) -> None:
    ids = await add_events(pool, 3)
    async with pool.connection() as conn:
        assert len(await db.claim_events(conn, 10, lease_seconds=1.0)) == 3  # and never marked
    bus = Bus(stream)
    relay = OutboxRelay(pool, bus, dsn, poll_seconds=30)
    assert await relay.publish_pending() == 0, "leased rows are left to their holder"
    async with asyncio.timeout(10):
        while not await relay.publish_pending():  # noqa: ASYNC110 (no event to await)
            await asyncio.sleep(0.05)  # poll with a deadline until the lease runs out
    assert await stream_msg_ids(stream) == [str(i) for i in ids]
    assert await unpublished(pool) == 0
    await bus.close()


async def test_a_failed_publish_releases_the_rest_of_the_batch(
    pool: db.Pool, stream: str, dsn: str, own_nats: NatsServer
) -> None:
    """Events left unpublished are not kept leased: another relay may take them at once."""
    await add_events(pool, 2)
    bus = Bus(stream, publish_timeout=0.5)
    await bus.connect()
    relay = OutboxRelay(pool, bus, dsn, poll_seconds=0.2)
    own_nats.stop()
    try:
        with pytest.raises(PublishFailed):
            await relay.publish_pending()
        async with pool.connection() as conn:
            assert len(await db.claim_events(conn, 10, lease_seconds=1.0)) == 2
    finally:
        own_nats.start()
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await wait_all_published(pool, 30)  # once that lease ends
    stop.set()
    await task
    await bus.close()
