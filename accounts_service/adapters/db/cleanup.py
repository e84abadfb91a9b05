"""SQL on the `storage_cleanup` queue: object prefixes to remove once due (deleted users, old
generations, stale uploads) and the guards written before an original is stored."""

from __future__ import annotations

from psycopg.rows import class_row

from accounts_service.adapters.db.pool import Conn
from accounts_service.adapters.db.rows import CleanupRow


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
