"""The accounts pool against a real PostgreSQL: it fails fast instead of queueing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from accounts_service.adapters import db
from accounts_service.errors import Overloaded, Unavailable
from devstack.net import free_port


@pytest.fixture
async def small_pool(dsn: str) -> AsyncIterator[db.Pool]:
    """One connection, one waiter at most, a short wait."""
    pool = db.Pool(dsn, min_size=1, max_size=1, max_waiting=1, timeout=0.5, open=False)
    async with pool:
        await pool.wait(timeout=10)
        yield pool


async def test_a_caller_past_the_waiting_queue_is_overloaded_at_once(small_pool: db.Pool) -> None:
    async with small_pool.connection():
        waiter = asyncio.create_task(small_pool.getconn(timeout=5))
        async with asyncio.timeout(5):
            while not small_pool.get_stats().get("requests_queued"):  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # poll with a deadline until the waiter queues
        with pytest.raises(Overloaded) as refused:
            await small_pool.getconn()
        assert refused.value.retry_after_seconds > 0
    await small_pool.putconn(await waiter)  # the queued caller got the connection


async def test_a_wait_that_times_out_with_every_connection_busy_is_overloaded(
    small_pool: db.Pool,
) -> None:
    async with small_pool.connection():
        with pytest.raises(Overloaded):
            await small_pool.getconn(timeout=0.2)


async def test_a_database_that_does_not_answer_is_unavailable() -> None:
    pool = db.Pool(
        f"postgresql://postgres@127.0.0.1:{free_port()}/none",
        min_size=1,
        max_size=2,
        max_waiting=1,
        timeout=0.5,
        open=False,
        reconnect_timeout=60,
    )
    async with pool:
        with pytest.raises(Unavailable):
            await pool.getconn()
