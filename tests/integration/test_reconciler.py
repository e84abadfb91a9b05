"""The reconciler against a real PostgreSQL: who is re-requested, and who is left alone."""

from __future__ import annotations

import asyncio
import uuid

from accounts_service.adapters import db
from accounts_service.background.reconciler import Reconciler
from accounts_service.events import request_thumbnails


async def add_user(pool: db.Pool, *, published: bool) -> db.UserRow:
    """A PENDING user whose request is in the outbox, published or not."""
    user_id = uuid.uuid4()
    async with pool.connection() as conn, conn.transaction():
        user = await db.insert_user(
            conn, user_id=user_id, email=f"{user_id}@example.com", display_name="R",
            avatar_object=f"avatars/{user_id}/1/original", avatar_content_type="image/png",
            request_id=None, request_hash=None,
        )  # fmt: skip
        event_id = await request_thumbnails(conn, user)
        if published:
            await db.mark_published(conn, [event_id])
    return user


async def outbox_rows(pool: db.Pool, user_id: uuid.UUID) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM outbox WHERE user_id = %s", (user_id,))
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_a_user_whose_event_went_out_but_never_finished_is_requested_again(
    pool: db.Pool,
) -> None:
    lost = await add_user(pool, published=True)
    waiting = await add_user(pool, published=False)
    reconciler = Reconciler(pool, after_seconds=0, every_seconds=60)

    assert await reconciler.sweep() == 1
    assert await outbox_rows(pool, lost.id) == 2
    assert await outbox_rows(pool, waiting.id) == 1, "its event is still waiting to go out"
    assert await reconciler.sweep() == 0, "the new event has not gone out yet"


async def test_recent_and_settled_users_are_left_alone(
    pool: db.Pool,
) -> None:
    recent = await add_user(pool, published=True)
    assert await Reconciler(pool, after_seconds=3600, every_seconds=60).sweep() == 0
    done = await add_user(pool, published=True)
    async with pool.connection() as conn:
        await db.set_failure(conn, done.id, 1, "TRUNCATED", "cut short")
    assert await Reconciler(pool, after_seconds=0, every_seconds=60).sweep() == 1
    assert await outbox_rows(pool, recent.id) == 2
    assert await outbox_rows(pool, done.id) == 1


async def test_replicas_sweeping_at_once_request_each_stalled_user_once(pool: db.Pool) -> None:
    """A replica whose statement began before another's commit waits for the row lock, then
    PostgreSQL re-checks the row as committed: its `requested_at` has moved, so it is skipped."""
    stalled = [await add_user(pool, published=True) for _ in range(20)]
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE users SET requested_at = requested_at - interval '1 hour' WHERE id = ANY(%s)",
            ([user.id for user in stalled],),
        )
    replicas = [Reconciler(pool, after_seconds=600, every_seconds=60, batch=5) for _ in range(4)]

    async def sweep_until_done(reconciler: Reconciler) -> int:
        total = 0
        while (found := await reconciler.sweep()) > 0:
            total += found
        return total

    swept = await asyncio.gather(*(sweep_until_done(r) for r in replicas))
    assert sum(swept) >= len(stalled)
    for user in stalled:
        assert await outbox_rows(pool, user.id) == 2, "requested again exactly once"
