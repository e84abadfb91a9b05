"""The WatchUser hub against a real PostgreSQL: NOTIFY-driven, deduplicated, one connection."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from accounts_service.adapters import db
from accounts_service.adapters.changes import ChangeHub
from accounts_service.errors import NotFound, Unavailable
from accounts_service.watch import Watcher

STEP = 10.0  # deadline for each awaited message


@pytest.fixture
async def hub(dsn: str, pool: db.Pool) -> AsyncIterator[ChangeHub]:
    hub = ChangeHub(dsn, reconnect_seconds=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(hub.run(stop))
    yield hub
    stop.set()
    await task


async def new_user(pool: db.Pool) -> uuid.UUID:
    user_id = uuid.uuid4()
    async with pool.connection() as conn:
        await db.insert_user(
            conn,
            user_id=user_id,
            email=f"{user_id}@example.com",
            display_name="Watched",
            avatar_object=f"avatars/{user_id}/1/original",
            avatar_content_type="image/png",
            request_id=None,
            request_hash=None,
        )
    return user_id


async def execute(pool: db.Pool, sql: str, *params: object) -> None:
    async with pool.connection() as conn:
        await conn.execute(sql, params)


async def test_current_state_then_changes_never_a_repeat_then_not_found(
    pool: db.Pool, hub: ChangeHub
) -> None:
    user_id = await new_user(pool)
    stream = Watcher(pool, hub).watch(str(user_id))
    first = await asyncio.wait_for(anext(stream), STEP)
    assert (first.id, first.display_name) == (user_id, "Watched")

    # A row update nobody can see (the outbox bookkeeping), then a real change: the next
    # message is the real change, not the same state again.
    await execute(pool, "UPDATE users SET requested_at = clock_timestamp() WHERE id = %s", user_id)
    await execute(pool, "UPDATE users SET display_name = 'Renamed' WHERE id = %s", user_id)
    second = await asyncio.wait_for(anext(stream), STEP)
    assert second.display_name == "Renamed"

    await execute(pool, "DELETE FROM users WHERE id = %s", user_id)
    with pytest.raises(NotFound, match="was deleted"):
        await asyncio.wait_for(anext(stream), STEP)
    assert hub.watchers == 0


async def test_an_unknown_user_is_not_found_at_once(pool: db.Pool, hub: ChangeHub) -> None:
    with pytest.raises(NotFound, match="not found"):
        await anext(Watcher(pool, hub).watch(str(uuid.uuid4())))
    assert hub.watchers == 0


async def test_many_watchers_share_one_listening_connection_and_close_ends_them(
    dsn: str, pool: db.Pool, hub: ChangeHub
) -> None:
    users = [await new_user(pool) for _ in range(5)]
    watcher = Watcher(pool, hub)
    streams = [watcher.watch(str(users[i % len(users)])) for i in range(100)]
    await asyncio.wait_for(asyncio.gather(*(anext(s) for s in streams)), STEP)
    assert hub.watchers == 100
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (hub.application_name,),
        )
        assert await cur.fetchone() == (1,)

    await execute(pool, "UPDATE users SET display_name = 'All' WHERE id = ANY(%s)", users)
    changed = await asyncio.wait_for(asyncio.gather(*(anext(s) for s in streams)), STEP)
    assert {u.display_name for u in changed} == {"All"}

    hub.close()
    for stream in streams:
        with pytest.raises(Unavailable, match="shutting down"):
            await asyncio.wait_for(anext(stream), STEP)
    assert hub.watchers == 0
    with pytest.raises(Unavailable):
        await anext(watcher.watch(str(users[0])))
