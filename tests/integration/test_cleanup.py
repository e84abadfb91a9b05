"""The storage cleanup queue against real PostgreSQL and S3, including an S3 outage."""

from __future__ import annotations

import io
import uuid

import psycopg
from minio import Minio

from accounts_service.adapters import db
from accounts_service.adapters.storage import Storage
from accounts_service.background.cleaner import StorageCleaner
from accounts_service.settings import Settings, from_env
from devstack.net import free_port
from devstack.s3 import S3Server
from object_keys import generation_prefixes, user_prefixes


def s3_settings(s3: S3Server, bucket: str, endpoint: str | None = None) -> Settings:
    return from_env(
        {
            "INTERNAL_TOKEN": "t",
            "S3_ENDPOINT": endpoint or s3.endpoint,
            "S3_ACCESS_KEY": s3.access_key,
            "S3_SECRET_KEY": s3.secret_key,
            "S3_BUCKET": bucket,
        }
    )


def storage_at(s3: S3Server, bucket: str, endpoint: str | None = None) -> Storage:
    return Storage(s3_settings(s3, bucket, endpoint))


def put(client: Minio, bucket: str, *keys: str) -> None:
    for key in keys:
        client.put_object(bucket, key, io.BytesIO(b"x"), 1)


def keys(client: Minio, bucket: str, prefix: str) -> set[str]:
    return {str(o.object_name) for o in client.list_objects(bucket, prefix=prefix, recursive=True)}


async def queued(pool: db.Pool) -> list[tuple[str, int, str]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT prefix, attempts, last_error FROM storage_cleanup ORDER BY id"
        )
        return await cur.fetchall()


async def schedule(pool: db.Pool, prefixes: list[str]) -> None:
    async with pool.connection() as conn:
        await db.schedule_cleanup(conn, prefixes, 0.0)


async def test_a_users_prefixes_go_and_nothing_else(
    pool: db.Pool, s3_server: S3Server, s3_bucket: str
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
    pool: db.Pool, s3_server: S3Server, s3_bucket: str
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
    pool: db.Pool, s3_server: S3Server, s3_bucket: str
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


async def test_a_prefix_leased_by_one_replica_is_left_alone_by_the_others(
    pool: db.Pool, s3_server: S3Server, s3_bucket: str
) -> None:
    client = s3_server.client()
    user = uuid.uuid4()
    put(client, s3_bucket, f"avatars/{user}/1/original")
    await schedule(pool, [f"avatars/{user}/"])
    async with pool.connection() as conn:
        [leased] = await db.claim_cleanup(conn, 10, lease_seconds=3600)  # a replica that died
    assert leased.attempts == 1
    other = StorageCleaner(pool, storage_at(s3_server, s3_bucket), every_seconds=1)
    assert await other.sweep() == 0
    assert keys(client, s3_bucket, f"avatars/{user}/") == {f"avatars/{user}/1/original"}
    async with pool.connection() as conn:  # the lease runs out
        await conn.execute("UPDATE storage_cleanup SET due_at = now()")
    assert await other.sweep() == 1
    assert keys(client, s3_bucket, f"avatars/{user}/") == set()
    assert await queued(pool) == []


CLEANER_APP = "cleaner-under-test"


class WatchedStorage(Storage):
    """Real storage that, as each removal starts, notes how many of the cleaner's sessions are
    inside a transaction."""

    def __init__(self, settings: Settings, dsn: str) -> None:
        super().__init__(settings)
        self._dsn = dsn
        self.open_transactions: list[int] = []

    async def delete_prefix(self, prefix: str) -> int:
        async with await psycopg.AsyncConnection.connect(self._dsn, autocommit=True) as probe:
            cur = await probe.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = %s AND xact_start IS NOT NULL",
                (CLEANER_APP,),
            )
            row = await cur.fetchone()
        assert row is not None
        self.open_transactions.append(int(row[0]))
        return await super().delete_prefix(prefix)


async def test_no_transaction_is_open_while_objects_are_removed(
    pool: db.Pool, dsn: str, s3_server: S3Server, s3_bucket: str
) -> None:
    client = s3_server.client()
    users = [uuid.uuid4() for _ in range(3)]
    put(client, s3_bucket, *(f"avatars/{u}/1/original" for u in users))
    await schedule(pool, [f"avatars/{u}/" for u in users])
    storage = WatchedStorage(s3_settings(s3_server, s3_bucket), dsn)
    cleaner_pool: db.Pool = db.Pool(
        dsn, min_size=2, max_size=2, open=False, kwargs={"application_name": CLEANER_APP}
    )
    async with cleaner_pool:
        assert await StorageCleaner(cleaner_pool, storage, every_seconds=1).sweep() == 3
    assert storage.open_transactions == [0, 0, 0]
    assert all(keys(client, s3_bucket, f"avatars/{u}/") == set() for u in users)


async def test_a_guarded_original_goes_unless_its_commit_takes_the_guard_back(
    pool: db.Pool, s3_server: S3Server, s3_bucket: str
) -> None:
    """An original is stored under a guard (a queued removal); the transaction that adopts it
    takes the guard back. One whose request never committed is removed once the guard is due,
    and a guard the cleaner has come for can no longer be taken back."""
    client = s3_server.client()
    adopted, orphan = uuid.uuid4(), uuid.uuid4()
    put(client, s3_bucket, f"avatars/{adopted}/1/original", f"avatars/{orphan}/1/original")
    async with pool.connection() as conn:
        kept = await db.guard_prefixes(conn, [f"avatars/{adopted}/1/"], 3600)
        assert len(await db.guard_prefixes(conn, [f"avatars/{orphan}/1/"], 3600)) == 1
        assert await db.release_guard(conn, kept)
        await conn.execute("UPDATE storage_cleanup SET due_at = now()")  # an hour later
    assert (
        await StorageCleaner(pool, storage_at(s3_server, s3_bucket), every_seconds=1).sweep() == 1
    )
    assert keys(client, s3_bucket, f"avatars/{adopted}/") == {f"avatars/{adopted}/1/original"}
    assert keys(client, s3_bucket, f"avatars/{orphan}/") == set()

    async with pool.connection() as conn:
        late = await db.guard_prefixes(conn, [f"avatars/{orphan}/2/"], 0.0)
        assert await db.claim_cleanup(conn, 10, lease_seconds=60)
        assert not await db.release_guard(conn, late), "the cleaner came for it first"
