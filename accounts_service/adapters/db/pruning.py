"""SQL that prunes what grows with traffic, one short batch per statement."""

from __future__ import annotations

from accounts_service.adapters.db.pool import Conn


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
