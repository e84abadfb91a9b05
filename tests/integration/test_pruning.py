"""Growth against a real PostgreSQL (and S3 for uploads): what the pruner removes and keeps, and
CreateAvatarUpload's rate limit."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from accounts_service.adapters import db
from accounts_service.adapters.storage import Storage
from accounts_service.background.pruner import Pruner, Retention
from accounts_service.errors import Overloaded
from accounts_service.events import request_thumbnails
from accounts_service.intake import AvatarIntake
from accounts_service.ratelimit import TokenBucket
from devstack.s3 import S3Server
from image_policy.prescan import ScanLimits
from tests.integration.test_cleanup import storage_at

HOUR = 3600.0
RETENTION = Retention(published_events=HOUR, request_ids=24 * HOUR, unused_uploads=HOUR)


async def add_user(pool: db.Pool, *, age_hours: float, request_id: str | None) -> db.UserRow:
    """A user created `age_hours` ago, with its event published `age_hours` ago."""
    user_id = uuid.uuid4()
    async with pool.connection() as conn, conn.transaction():
        user = await db.insert_user(
            conn, user_id=user_id, email=f"{user_id}@example.com", display_name="P",
            avatar_object=f"avatars/{user_id}/1/original", avatar_content_type="image/png",
            request_id=request_id, request_hash="h" if request_id else None,
        )  # fmt: skip
        event_id = await request_thumbnails(conn, user)
        await db.mark_published(conn, [event_id])
        await conn.execute(
            "UPDATE users SET create_time = now() - make_interval(secs => %s * 3600) WHERE id = %s",
            (age_hours, user_id),
        )
        await conn.execute(
            "UPDATE outbox SET published_at = now() - make_interval(secs => %s * 3600)"
            " WHERE event_id = %s",
            (age_hours, event_id),
        )
        user = await db.get_user(conn, user_id)
    assert user is not None
    return user


async def add_unpublished(pool: db.Pool, age_hours: float) -> None:
    async with pool.connection() as conn:
        event_id = uuid.uuid4()
        await db.insert_event(conn, event_id, "accounts.thumbnail.requested", b"", uuid.uuid4())
        await conn.execute(
            "UPDATE outbox SET created_at = now() - make_interval(secs => %s * 3600)"
            " WHERE event_id = %s",
            (age_hours, event_id),
        )


async def add_upload(pool: db.Pool, *, expired_hours_ago: float, used: bool) -> str:
    key = f"uploads/{uuid.uuid4()}"
    expire_time = datetime.now(UTC) - timedelta(hours=expired_hours_ago)
    async with pool.connection() as conn:
        await db.insert_upload(conn, key, "image/png", 10, expire_time)
        if used:
            assert await db.claim_upload(conn, key, uuid.uuid4())
    return key


async def column(pool: db.Pool, sql: str) -> set[object]:
    async with pool.connection() as conn:
        cur = await conn.execute(sql)
        return {row[0] for row in await cur.fetchall()}


async def test_pruning_removes_what_is_past_its_horizon_and_keeps_the_rest(
    pool: db.Pool,
) -> None:
    old = [await add_user(pool, age_hours=25, request_id=f"old-{i}") for i in range(5)]
    recent = await add_user(pool, age_hours=0.5, request_id="recent")
    await add_unpublished(pool, age_hours=48)  # never published: the relay still needs it
    gone_uploads = {
        await add_upload(pool, expired_hours_ago=0.1, used=True),
        await add_upload(pool, expired_hours_ago=2, used=False),
    }
    kept_uploads = {
        await add_upload(pool, expired_hours_ago=-0.5, used=True),  # not expired yet
        await add_upload(pool, expired_hours_ago=0.5, used=False),  # its object is still there
        await add_upload(pool, expired_hours_ago=-0.5, used=False),
    }

    pruner = Pruner(pool, RETENTION, every_seconds=60, batch=2)  # batches of 2: several rounds
    assert await pruner.prune() == {"events": 5, "uploads": 2, "request_ids": 5}
    assert await pruner.prune() == {"events": 0, "uploads": 0, "request_ids": 0}

    assert await column(pool, "SELECT user_id FROM outbox WHERE published_at IS NOT NULL") == {
        recent.id
    }
    assert await column(pool, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == {1}
    assert await column(pool, "SELECT object FROM uploads") == kept_uploads
    assert gone_uploads.isdisjoint(kept_uploads)
    assert await column(pool, "SELECT request_id FROM users WHERE request_id IS NOT NULL") == {
        "recent"
    }
    async with pool.connection() as conn:
        after = await db.get_user(conn, old[0].id)
    assert after is not None and after.request_id is None
    assert after == old[0], "forgetting a request id changes nothing a watcher would send"


async def test_replicas_pruning_at_once_split_the_work(
    pool: db.Pool,
) -> None:
    for i in range(30):
        await add_user(pool, age_hours=30, request_id=f"r-{i}")
    pruners = [Pruner(pool, RETENTION, every_seconds=60, batch=4) for _ in range(3)]
    results = await asyncio.gather(*(p.prune() for p in pruners))
    assert sum(r["events"] for r in results) == 30
    assert sum(r["request_ids"] for r in results) == 30
    assert await column(pool, "SELECT count(*) FROM outbox") == {0}


async def test_the_pruning_loop_prunes_at_once_and_stops_when_told(
    pool: db.Pool,
) -> None:
    await add_user(pool, age_hours=2, request_id=None)
    stop = asyncio.Event()
    task = asyncio.create_task(Pruner(pool, RETENTION, every_seconds=3600).run(stop))
    async with asyncio.timeout(10):
        while await column(pool, "SELECT count(*) FROM outbox") != {0}:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # poll with a deadline
    stop.set()
    await asyncio.wait_for(task, 5)


def intake(pool: db.Pool, storage: Storage, burst: int) -> AvatarIntake:
    return AvatarIntake(pool, storage, ScanLimits(), TokenBucket(rate=0.01, burst=burst))


async def test_create_avatar_upload_is_refused_past_its_rate_and_nothing_is_written(
    pool: db.Pool, s3_server: S3Server, s3_bucket: str
) -> None:
    uploads = intake(pool, storage_at(s3_server, s3_bucket), burst=3)
    issued = [await uploads.issue_upload("image/png", 100) for _ in range(3)]
    with pytest.raises(Overloaded) as refused:
        await uploads.issue_upload("image/png", 100)
    assert 0 < refused.value.retry_after_seconds <= 100  # a token every 100 s
    assert await column(pool, "SELECT object FROM uploads") == {u.object for u in issued}
    assert await column(pool, "SELECT count(*) FROM storage_cleanup") == {3}
