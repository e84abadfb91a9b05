"""The storage cleanup queue against real PostgreSQL and S3, including an S3 outage."""

from __future__ import annotations

import io
import uuid

from minio import Minio
from psycopg_pool import AsyncConnectionPool

from accounts_service import db
from accounts_service.cleanup import StorageCleaner, generation_prefixes, user_prefixes
from accounts_service.settings import from_env
from accounts_service.storage import Storage
from devstack.net import free_port
from devstack.s3 import S3Server


def storage_at(s3: S3Server, bucket: str, endpoint: str | None = None) -> Storage:
    return Storage(
        from_env(
            {
                "INTERNAL_TOKEN": "t",
                "S3_ENDPOINT": endpoint or s3.endpoint,
                "S3_ACCESS_KEY": s3.access_key,
                "S3_SECRET_KEY": s3.secret_key,
                "S3_BUCKET": bucket,
            }
        )
    )


def put(client: Minio, bucket: str, *keys: str) -> None:
    for key in keys:
        client.put_object(bucket, key, io.BytesIO(b"x"), 1)


def keys(client: Minio, bucket: str, prefix: str) -> set[str]:
    return {str(o.object_name) for o in client.list_objects(bucket, prefix=prefix, recursive=True)}


async def queued(pool: AsyncConnectionPool[db.Conn]) -> list[tuple[str, int, str]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT prefix, attempts, last_error FROM storage_cleanup ORDER BY id"
        )
        return await cur.fetchall()


async def schedule(pool: AsyncConnectionPool[db.Conn], prefixes: list[str]) -> None:
    async with pool.connection() as conn:
        await db.schedule_cleanup(conn, prefixes, 0.0)


async def test_a_users_prefixes_go_and_nothing_else(
    pool: AsyncConnectionPool[db.Conn], s3_server: S3Server, s3_bucket: str
) -> None:
    client = s3_server.client()
    gone, kept = uuid.uuid4(), uuid.uuid4()
    put(client, s3_bucket, f"avatars/{gone}/1/original", f"avatars/{gone}/2/original",
        f"thumbnails/{gone}/2/small.png", f"avatars/{kept}/1/original")  # fmt: skip
    await schedule(pool, user_prefixes(gone))
    cleaner = StorageCleaner(pool, storage_at(s3_server, s3_bucket), every_seconds=1)
    assert await cleaner.sweep() == 2
    assert keys(client, s3_bucket, f"avatars/{gone}/") == set()
    assert keys(client, s3_bucket, f"thumbnails/{gone}/") == set()
    assert keys(client, s3_bucket, f"avatars/{kept}/") == {f"avatars/{kept}/1/original"}
    assert await queued(pool) == []


async def test_one_generation_goes_and_not_one_sharing_its_digits(
    pool: AsyncConnectionPool[db.Conn], s3_server: S3Server, s3_bucket: str
) -> None:
    client = s3_server.client()
    user = uuid.uuid4()
    put(client, s3_bucket, f"avatars/{user}/1/original", f"thumbnails/{user}/1/large.png",
        f"avatars/{user}/10/original", f"thumbnails/{user}/10/large.png")  # fmt: skip
    await schedule(pool, generation_prefixes(user, 1))
    await StorageCleaner(pool, storage_at(s3_server, s3_bucket), every_seconds=1).sweep()
    assert keys(client, s3_bucket, f"avatars/{user}/") == {f"avatars/{user}/10/original"}
    assert keys(client, s3_bucket, f"thumbnails/{user}/") == {f"thumbnails/{user}/10/large.png"}


async def test_an_s3_outage_postpones_the_cleanup_and_loses_nothing(
    pool: AsyncConnectionPool[db.Conn], s3_server: S3Server, s3_bucket: str
) -> None:
    client = s3_server.client()
    user = uuid.uuid4()
    put(client, s3_bucket, f"avatars/{user}/1/original")
    await schedule(pool, [f"avatars/{user}/"])
    down = storage_at(s3_server, s3_bucket, endpoint=f"127.0.0.1:{free_port()}")
    assert await StorageCleaner(pool, down, every_seconds=1).sweep() == 1
    [(prefix, attempts, error)] = await queued(pool)
    assert (prefix, attempts) == (f"avatars/{user}/", 1) and "unreachable" in error

    up = StorageCleaner(pool, storage_at(s3_server, s3_bucket), every_seconds=1)
    assert await up.sweep() == 0, "postponed rows are not due yet"
    async with pool.connection() as conn:
        await conn.execute("UPDATE storage_cleanup SET due_at = now()")
    assert await up.sweep() == 1
    assert keys(client, s3_bucket, f"avatars/{user}/") == set()
    assert await queued(pool) == []
