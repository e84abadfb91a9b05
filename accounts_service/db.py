"""PostgreSQL: every SQL statement of the accounts service lives here, and the pool.

No caller holds a connection, a row lock or an open transaction across a call to S3 or NATS:
each use case reads and reserves in one short block, talks to the network with no connection,
then commits in another short block (see users.py, outbox.py, cleanup.py).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout, TooManyRequests

from accounts_service.errors import AlreadyExists, Overloaded, Unavailable

log = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[Any]
_MIGRATION_LOCK = 0x61766174  # pg_advisory_xact_lock key: several replicas may start at once
POOL_RETRY_AFTER_SECONDS = 1.0  # each use case holds a connection for milliseconds


class Pool(AsyncConnectionPool[Conn]):
    """The connection pool, failing fast instead of queueing without bound.

    Built with `max_waiting` and a short `timeout`. A caller refused a connection (past the
    waiting queue, or its wait timed out) while every connection is lent out gets Overloaded:
    retry shortly. One refused while connections are to spare finds PostgreSQL not answering
    (the pool cannot open or check them): Unavailable.
    """

    lent = 0  # connections handed out and not given back (the constructor stays the library's)

    async def getconn(self, timeout: float | None = None) -> Conn:  # noqa: ASYNC109 (its signature)
        try:
            conn = await super().getconn(timeout)
        except (TooManyRequests, PoolTimeout) as exc:
            if self.lent >= self.max_size:
                raise Overloaded(
                    POOL_RETRY_AFTER_SECONDS, "every database connection is busy"
                ) from exc
            raise Unavailable("database unavailable, retry later") from exc
        self.lent += 1
        return conn

    async def putconn(self, conn: Conn) -> None:
        self.lent -= 1
        await super().putconn(conn)


@dataclass(frozen=True)
class UserRow:
    id: uuid.UUID
    email: str
    display_name: str
    avatar_object: str
    avatar_content_type: str
    avatar_generation: int
    thumbnail_status: str
    thumbnails: dict[str, Any] | None
    failure_code: str
    failure_reason: str
    # Not compared either: pruning old request ids changes nothing a client sees.
    request_id: str | None = field(compare=False)
    request_hash: str | None = field(compare=False)
    create_time: datetime
    update_time: datetime
    # When thumbnails were last requested. Not part of the user's state: WatchUser compares
    # rows, and a re-request alone must not repeat an unchanged state.
    requested_at: datetime = field(compare=False)


@dataclass(frozen=True)
class OutboxRow:
    event_id: uuid.UUID
    subject: str
    payload: bytes
    traceparent: str | None
    created_at: datetime


@dataclass(frozen=True)
class UploadRow:
    object: str
    content_type: str
    content_length: int
    expire_time: datetime
    used_by: uuid.UUID | None


@dataclass(frozen=True)
class CleanupRow:
    id: int
    prefix: str
    attempts: int


_USER_COLUMNS = (
    "id, email, display_name, avatar_object, avatar_content_type, avatar_generation, "
    "thumbnail_status, thumbnails, failure_code, failure_reason, request_id, request_hash, "
    "create_time, update_time, requested_at"
)


async def migrate(pool: AsyncConnectionPool[Conn]) -> list[str]:
    """Applies the SQL files in migrations/ not applied yet, in name order; returns their names."""
    files = sorted(
        (
            f
            for f in resources.files("accounts_service.migrations").iterdir()
            if f.name.endswith(".sql")
        ),
        key=lambda f: f.name,
    )
    applied: list[str] = []
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in await cur.fetchall()}
        for f in files:
            if f.name in done:
                continue
            await conn.execute(f.read_text(encoding="utf-8"))
            await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (f.name,))
            applied.append(f.name)
    return applied


async def email_taken(conn: Conn, email: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM users WHERE lower(email) = lower(%s)", (email,))
    return await cur.fetchone() is not None


async def insert_user(
    conn: Conn,
    *,
    user_id: uuid.UUID,
    email: str,
    display_name: str,
    avatar_object: str,
    avatar_content_type: str,
    request_id: str | None,
    request_hash: str | None,
) -> UserRow:
    """Inserts a PENDING user at generation 1; AlreadyExists when the email is taken."""
    try:
        async with conn.cursor(row_factory=class_row(UserRow)) as cur:
            await cur.execute(
                "INSERT INTO users (id, email, display_name, avatar_object, avatar_content_type,"
                " thumbnail_status, request_id, request_hash)"
                f" VALUES (%s, %s, %s, %s, %s, 'PENDING', %s, %s) RETURNING {_USER_COLUMNS}",
                (
                    user_id,
                    email,
                    display_name,
                    avatar_object,
                    avatar_content_type,
                    request_id,
                    request_hash,
                ),
            )
            row = await cur.fetchone()
    except psycopg.errors.UniqueViolation as exc:
        if exc.diag.constraint_name == "users_email_lower_key":
            raise AlreadyExists(f"email {email!r} is already taken") from exc
        raise
    assert row is not None
    return row


async def insert_event(
    conn: Conn,
    event_id: uuid.UUID,
    subject: str,
    payload: bytes,
    user_id: uuid.UUID,
    traceparent: str | None = None,
) -> None:
    """Queues an event for the relay and notes when the user's thumbnails were requested."""
    await conn.execute(
        "INSERT INTO outbox (event_id, subject, payload, user_id, traceparent)"
        " VALUES (%s, %s, %s, %s, %s)",
        (event_id, subject, payload, user_id, traceparent),
    )
    await conn.execute(
        "UPDATE users SET requested_at = clock_timestamp() WHERE id = %s", (user_id,)
    )


async def claim_stalled(conn: Conn, older_than_seconds: float, limit: int) -> list[UserRow]:
    """Locks users PENDING since longer than that with no event left in the outbox."""
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        await cur.execute(
            f"SELECT {_USER_COLUMNS} FROM users u WHERE thumbnail_status = 'PENDING'"
            " AND requested_at < clock_timestamp() - make_interval(secs => %s)"
            " AND NOT EXISTS (SELECT 1 FROM outbox o"
            "   WHERE o.user_id = u.id AND o.published_at IS NULL)"
            " ORDER BY requested_at LIMIT %s FOR UPDATE SKIP LOCKED",
            (older_than_seconds, limit),
        )
        return await cur.fetchall()


async def get_user(conn: Conn, user_id: uuid.UUID, *, for_update: bool = False) -> UserRow | None:
    lock = " FOR UPDATE" if for_update else ""
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        await cur.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE id = %s{lock}", (user_id,))
        return await cur.fetchone()


async def get_user_by_request_id(conn: Conn, request_id: str) -> UserRow | None:
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        await cur.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE request_id = %s", (request_id,))
        return await cur.fetchone()


async def list_users(
    conn: Conn, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[UserRow]:
    """Users ordered by (create_time, id), strictly after the given key."""
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        if after is None:
            await cur.execute(
                f"SELECT {_USER_COLUMNS} FROM users ORDER BY create_time, id LIMIT %s", (limit,)
            )
        else:
            await cur.execute(
                f"SELECT {_USER_COLUMNS} FROM users WHERE (create_time, id) > (%s, %s)"
                " ORDER BY create_time, id LIMIT %s",
                (after[0], after[1], limit),
            )
        return await cur.fetchall()


async def set_avatar(
    conn: Conn, user_id: uuid.UUID, generation: int, avatar_object: str, content_type: str
) -> UserRow | None:
    """Moves the user to a new avatar generation, PENDING again."""
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        await cur.execute(
            "UPDATE users SET avatar_object = %s, avatar_content_type = %s,"
            " avatar_generation = %s, thumbnail_status = 'PENDING', thumbnails = NULL,"
            " failure_code = '', failure_reason = '', update_time = clock_timestamp()"
            f" WHERE id = %s RETURNING {_USER_COLUMNS}",
            (avatar_object, content_type, generation, user_id),
        )
        return await cur.fetchone()


async def reserve_generation(conn: Conn, user_id: uuid.UUID) -> int | None:
    """A generation number no other UpdateAvatar of this user gets, above the current one
    (None: no such user). Reserved before the original is stored under it, so concurrent
    updates never write the same key; one that fails leaves a gap in the numbers."""
    cur = await conn.execute(
        "UPDATE users SET avatar_reserved = greatest(avatar_reserved, avatar_generation) + 1"
        " WHERE id = %s RETURNING avatar_reserved",
        (user_id,),
    )
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def set_pending(conn: Conn, user_id: uuid.UUID) -> UserRow | None:
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        await cur.execute(
            "UPDATE users SET thumbnail_status = 'PENDING', failure_code = '',"
            " failure_reason = '', update_time = clock_timestamp()"
            f" WHERE id = %s RETURNING {_USER_COLUMNS}",
            (user_id,),
        )
        return await cur.fetchone()


async def set_thumbnails(
    conn: Conn, user_id: uuid.UUID, generation: int, thumbnails: dict[str, Any]
) -> UserRow | None:
    """READY with these thumbnails, only if `generation` is still the user's; else None."""
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        await cur.execute(
            "UPDATE users SET thumbnail_status = 'READY', thumbnails = %s, failure_code = '',"
            " failure_reason = '', update_time = clock_timestamp()"
            " WHERE id = %s AND avatar_generation = %s"
            " AND (thumbnail_status <> 'READY' OR thumbnails IS DISTINCT FROM %s)"
            f" RETURNING {_USER_COLUMNS}",
            (Jsonb(thumbnails), user_id, generation, Jsonb(thumbnails)),
        )
        return await cur.fetchone()


async def set_failure(
    conn: Conn, user_id: uuid.UUID, generation: int, code: str, reason: str
) -> UserRow | None:
    """FAILED, only for the user's current generation and never over READY; else None."""
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        await cur.execute(
            "UPDATE users SET thumbnail_status = 'FAILED', failure_code = %s,"
            " failure_reason = %s, update_time = clock_timestamp()"
            " WHERE id = %s AND avatar_generation = %s AND thumbnail_status = 'PENDING'"
            f" RETURNING {_USER_COLUMNS}",
            (code, reason, user_id, generation),
        )
        return await cur.fetchone()


async def claim_events(conn: Conn, limit: int, lease_seconds: float) -> list[OutboxRow]:
    """Leases up to `limit` unpublished events, oldest first, for `lease_seconds`.

    One statement that commits with the caller's block: the relay publishes with no lock held.
    Rows another relay holds (locked now, or leased and not expired) are skipped; a relay that
    dies mid-batch leaves its rows to the others once the lease runs out."""
    async with conn.cursor(row_factory=class_row(OutboxRow)) as cur:
        await cur.execute(
            "UPDATE outbox SET claimed_until = clock_timestamp() + make_interval(secs => %s)"
            " WHERE event_id IN (SELECT event_id FROM outbox WHERE published_at IS NULL"
            "   AND (claimed_until IS NULL OR claimed_until < clock_timestamp())"
            "   ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED)"
            " RETURNING event_id, subject, payload, traceparent, created_at",
            (lease_seconds, limit),
        )
        rows = await cur.fetchall()
    return sorted(rows, key=lambda r: r.created_at)


async def mark_published(conn: Conn, event_ids: list[uuid.UUID]) -> list[float]:
    """Marks the events published; returns each one's seconds from insert to now."""
    if not event_ids:
        return []
    cur = await conn.execute(
        "UPDATE outbox SET published_at = clock_timestamp(), attempts = attempts + 1,"
        " claimed_until = NULL WHERE event_id = ANY(%s)"
        " RETURNING extract(epoch FROM published_at - created_at)::float8",
        (event_ids,),
    )
    return [float(row[0]) for row in await cur.fetchall()]


async def record_publish_error(conn: Conn, event_ids: list[uuid.UUID], error: str) -> None:
    if event_ids:
        await conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = %s WHERE event_id = ANY(%s)",
            (error[:500], event_ids),
        )


async def release_events(conn: Conn, event_ids: list[uuid.UUID]) -> None:
    """Ends the lease of events not published, so any relay may try them at once."""
    if event_ids:
        await conn.execute(
            "UPDATE outbox SET claimed_until = NULL"
            " WHERE event_id = ANY(%s) AND published_at IS NULL",
            (event_ids,),
        )


async def pending_events(conn: Conn) -> int:
    cur = await conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def insert_upload(
    conn: Conn, obj: str, content_type: str, content_length: int, expire_time: datetime
) -> None:
    await conn.execute(
        "INSERT INTO uploads (object, content_type, content_length, expire_time)"
        " VALUES (%s, %s, %s, %s)",
        (obj, content_type, content_length, expire_time),
    )


async def claim_upload(conn: Conn, obj: str, user_id: uuid.UUID) -> UploadRow | None:
    """Marks an issued, unused upload as used by `user_id`; None if not issued or already used."""
    async with conn.cursor(row_factory=class_row(UploadRow)) as cur:
        await cur.execute(
            "UPDATE uploads SET used_by = %s WHERE object = %s AND used_by IS NULL"
            " RETURNING object, content_type, content_length, expire_time, used_by",
            (user_id, obj),
        )
        return await cur.fetchone()


async def get_upload(conn: Conn, obj: str) -> UploadRow | None:
    async with conn.cursor(row_factory=class_row(UploadRow)) as cur:
        await cur.execute(
            "SELECT object, content_type, content_length, expire_time, used_by"
            " FROM uploads WHERE object = %s",
            (obj,),
        )
        return await cur.fetchone()


async def delete_user(conn: Conn, user_id: uuid.UUID) -> bool:
    """Deletes the user and its unpublished events; False if there was no such user."""
    cur = await conn.execute("DELETE FROM users WHERE id = %s", (user_id,))
    if cur.rowcount == 0:
        return False
    await conn.execute("DELETE FROM outbox WHERE user_id = %s AND published_at IS NULL", (user_id,))
    return True


async def schedule_cleanup(conn: Conn, prefixes: list[str], delay_seconds: float) -> None:
    """Queues the removal of every object under each prefix, `delay_seconds` from now."""
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO storage_cleanup (prefix, due_at)"
            " VALUES (%s, clock_timestamp() + make_interval(secs => %s))",
            [(prefix, delay_seconds) for prefix in prefixes],
        )


async def guard_prefixes(conn: Conn, prefixes: list[str], delay_seconds: float) -> list[int]:
    """Queues the removal of `prefixes` `delay_seconds` from now and returns the row ids: written
    before an original is stored, so a crash before the commit leaves no orphan. The commit
    takes the rows back with `release_guard`."""
    cur = await conn.execute(
        "INSERT INTO storage_cleanup (prefix, due_at)"
        " SELECT p, clock_timestamp() + make_interval(secs => %s) FROM unnest(%s::text[]) AS p"
        " RETURNING id",
        (delay_seconds, prefixes),
    )
    return [int(row[0]) for row in await cur.fetchall()]


async def release_guard(conn: Conn, guard_ids: list[int]) -> bool:
    """Takes back the cleanups `guard_prefixes` queued; False if any is due or was ever claimed
    by the cleaner (the guarded objects may be gone: the caller must not commit)."""
    cur = await conn.execute(
        "DELETE FROM storage_cleanup WHERE id = ANY(%s)"
        " AND attempts = 0 AND due_at > clock_timestamp()",
        (guard_ids,),
    )
    return cur.rowcount == len(guard_ids)


async def claim_cleanup(conn: Conn, limit: int, lease_seconds: float) -> list[CleanupRow]:
    """Leases up to `limit` due cleanups, oldest first, counting the attempt.

    The lease moves `due_at` `lease_seconds` ahead, so other replicas skip the rows while the
    claimer removes objects with no lock held; if it dies, they become due again."""
    async with conn.cursor(row_factory=class_row(CleanupRow)) as cur:
        await cur.execute(
            "UPDATE storage_cleanup SET attempts = attempts + 1,"
            " due_at = clock_timestamp() + make_interval(secs => %s)"
            " WHERE id IN (SELECT id FROM storage_cleanup WHERE due_at <= clock_timestamp()"
            "   ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED)"
            " RETURNING id, prefix, attempts",
            (lease_seconds, limit),
        )
        return sorted(await cur.fetchall(), key=lambda r: r.id)


async def finish_cleanup(conn: Conn, cleanup_id: int) -> None:
    await conn.execute("DELETE FROM storage_cleanup WHERE id = %s", (cleanup_id,))


async def postpone_cleanup(conn: Conn, cleanup_id: int, delay_seconds: float, error: str) -> None:
    await conn.execute(
        "UPDATE storage_cleanup SET last_error = %s,"
        " due_at = clock_timestamp() + make_interval(secs => %s) WHERE id = %s",
        (error[:500], delay_seconds, cleanup_id),
    )


async def prune_outbox(conn: Conn, older_than_seconds: float, limit: int) -> int:
    """Deletes up to `limit` events published longer ago than that; returns how many."""
    cur = await conn.execute(
        "DELETE FROM outbox WHERE event_id IN (SELECT event_id FROM outbox"
        " WHERE published_at < clock_timestamp() - make_interval(secs => %s)"
        " ORDER BY published_at LIMIT %s FOR UPDATE SKIP LOCKED)",
        (older_than_seconds, limit),
    )
    return cur.rowcount


async def prune_uploads(conn: Conn, unused_grace_seconds: float, limit: int) -> int:
    """Deletes up to `limit` issued uploads: used ones once expired, unused ones
    `unused_grace_seconds` after that (their object is removed by then); returns how many."""
    cur = await conn.execute(
        "DELETE FROM uploads WHERE object IN (SELECT object FROM uploads"
        " WHERE expire_time < clock_timestamp() AND (used_by IS NOT NULL"
        "   OR expire_time < clock_timestamp() - make_interval(secs => %s))"
        " ORDER BY expire_time LIMIT %s FOR UPDATE SKIP LOCKED)",
        (unused_grace_seconds, limit),
    )
    return cur.rowcount


async def prune_request_ids(conn: Conn, older_than_seconds: float, limit: int) -> int:
    """Forgets the request ids of up to `limit` users created longer ago than that."""
    cur = await conn.execute(
        "UPDATE users SET request_id = NULL, request_hash = NULL WHERE id IN (SELECT id FROM users"
        " WHERE request_id IS NOT NULL"
        "   AND create_time < clock_timestamp() - make_interval(secs => %s)"
        " ORDER BY create_time LIMIT %s FOR UPDATE SKIP LOCKED)",
        (older_than_seconds, limit),
    )
    return cur.rowcount


async def listen(dsn: str, channel: str, application_name: str) -> Conn:
    """A dedicated autocommit connection LISTENing on `channel` (not from the pool: reading its
    notifications holds the connection); `application_name` names it in pg_stat_activity."""
    conn = await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, application_name=application_name
    )
    try:
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    except BaseException:
        await conn.close()
        raise
    return conn
