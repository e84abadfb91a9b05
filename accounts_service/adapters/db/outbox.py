"""SQL on the `outbox` table: queue an event in the caller's transaction, lease a batch,
mark it published or release it, count the backlog."""

from __future__ import annotations

import uuid

from psycopg.rows import class_row

from accounts_service.adapters.db.pool import Conn
from accounts_service.adapters.db.rows import OutboxRow


async def insert_event(
    conn: Conn,
    event_id: uuid.UUID,
    subject: str,
    payload: bytes,
    user_id: uuid.UUID,
    traceparent: str | None = None,
) -> None:
    """Queues an event for the relay, in the caller's transaction (the table's trigger NOTIFYs
    channel `outbox` at commit), and sets the user's `requested_at`: the time-to-thumbnail
    metric and the reconciler measure from it."""
    await conn.execute(
        "INSERT INTO outbox (event_id, subject, payload, user_id, traceparent)"
        " VALUES (%s, %s, %s, %s, %s)",
        (event_id, subject, payload, user_id, traceparent),
    )
    await conn.execute(
        "UPDATE users SET requested_at = clock_timestamp() WHERE id = %s", (user_id,)
    )


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
