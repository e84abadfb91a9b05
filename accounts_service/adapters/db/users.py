"""SQL on the `users` table: create, read, page, move between avatar generations and thumbnail
states, find stalled users, delete."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from accounts_service.adapters.db.pool import Conn
from accounts_service.adapters.db.rows import USER_COLUMNS, UserRow
from accounts_service.errors import AlreadyExists


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
    """Inserts a PENDING user at generation 1; AlreadyExists when the email or the request id
    is taken."""
    try:
        async with conn.cursor(row_factory=class_row(UserRow)) as cur:
            await cur.execute(
                "INSERT INTO users (id, email, display_name, avatar_object, avatar_content_type,"
                " thumbnail_status, request_id, request_hash)"
                f" VALUES (%s, %s, %s, %s, %s, 'PENDING', %s, %s) RETURNING {USER_COLUMNS}",
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
        if exc.diag.constraint_name == "users_request_id_key":  # a concurrent retry won
            raise AlreadyExists(f"request_id {request_id!r} was already used") from exc
        raise
    assert row is not None
    return row


async def get_user(conn: Conn, user_id: uuid.UUID, *, for_update: bool = False) -> UserRow | None:
    lock = " FOR UPDATE" if for_update else ""
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        await cur.execute(f"SELECT {USER_COLUMNS} FROM users WHERE id = %s{lock}", (user_id,))
        return await cur.fetchone()


async def get_user_by_request_id(conn: Conn, request_id: str) -> UserRow | None:
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        await cur.execute(f"SELECT {USER_COLUMNS} FROM users WHERE request_id = %s", (request_id,))
        return await cur.fetchone()


async def list_users(
    conn: Conn, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[UserRow]:
    """Users ordered by (create_time, id), strictly after the given key."""
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        if after is None:
            await cur.execute(
                f"SELECT {USER_COLUMNS} FROM users ORDER BY create_time, id LIMIT %s", (limit,)
            )
        else:
            await cur.execute(
                f"SELECT {USER_COLUMNS} FROM users WHERE (create_time, id) > (%s, %s)"
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
            f" WHERE id = %s RETURNING {USER_COLUMNS}",
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
            f" WHERE id = %s RETURNING {USER_COLUMNS}",
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
            f" RETURNING {USER_COLUMNS}",
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
            f" RETURNING {USER_COLUMNS}",
            (code, reason, user_id, generation),
        )
        return await cur.fetchone()


async def claim_stalled(conn: Conn, older_than_seconds: float, limit: int) -> list[UserRow]:
    """Locks users PENDING since longer than that with no event left in the outbox."""
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        await cur.execute(
            f"SELECT {USER_COLUMNS} FROM users u WHERE thumbnail_status = 'PENDING'"
            " AND requested_at < clock_timestamp() - make_interval(secs => %s)"
            " AND NOT EXISTS (SELECT 1 FROM outbox o"
            "   WHERE o.user_id = u.id AND o.published_at IS NULL)"
            " ORDER BY requested_at LIMIT %s FOR UPDATE SKIP LOCKED",
            (older_than_seconds, limit),
        )
        return await cur.fetchall()


async def delete_user(conn: Conn, user_id: uuid.UUID) -> bool:
    """Deletes the user and its unpublished events; False if there was no such user."""
    cur = await conn.execute("DELETE FROM users WHERE id = %s", (user_id,))
    if cur.rowcount == 0:
        return False
    await conn.execute("DELETE FROM outbox WHERE user_id = %s AND published_at IS NULL", (user_id,))
    return True
