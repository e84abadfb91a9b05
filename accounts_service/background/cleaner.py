"""Removes queued storage prefixes once due: deleted users, old avatar generations, stale
uploads, and originals whose request never committed (see `AvatarIntake.guard`).

The queue is the `storage_cleanup` table, filled in the same transaction as the change that
makes the objects obsolete; a row goes only after its objects are gone, so an S3 outage delays
the removal and loses nothing. No transaction is open while S3 is called: a batch is leased
(its `due_at` moved `lease_seconds` ahead, the attempt counted) in one short statement, the
objects are removed with no connection held, then each row is deleted or postponed.

Several replicas: the lease is taken with FOR UPDATE SKIP LOCKED, and a leased row is not due
for the others, so each prefix is swept by one replica at a time; a replica that dies leaves
its rows to the others when the lease runs out (removing objects twice is harmless).
"""

from __future__ import annotations

import asyncio
import logging

from accounts_service.adapters import db
from accounts_service.adapters.storage import Storage
from accounts_service.errors import AccountsError, Unavailable

log = logging.getLogger(__name__)


class StorageCleaner:
    def __init__(
        self,
        pool: db.Pool,
        storage: Storage,
        every_seconds: float,
        batch: int = 20,
        lease_seconds: float = 120.0,
    ) -> None:
        self._pool = pool
        self._storage = storage
        self._every = every_seconds
        self._batch = batch
        self._lease = lease_seconds
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Sweep now rather than at the next interval (something became due)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Sweeps every `every_seconds`, or when woken, until `stop` is set."""
        while not stop.is_set():
            self._wake.clear()
            try:
                while await self.sweep() == self._batch:
                    pass
            except AccountsError as exc:
                log.warning("storage cleanup failed, will retry", extra={"error": str(exc)})
            waiters = [asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())]
            try:
                await asyncio.wait(
                    waiters, timeout=self._every, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for task in waiters:
                    task.cancel()

    async def sweep(self) -> int:
        """One batch of due prefixes; returns how many were claimed."""
        async with self._pool.connection() as conn:
            due = await db.claim_cleanup(conn, self._batch, self._lease)
        done: list[int] = []
        postponed: list[tuple[int, float, str]] = []
        for row in due:
            try:
                removed = await self._storage.delete_prefix(row.prefix)
            except Unavailable as exc:
                delay = min(300.0, self._every * 2 ** min(row.attempts - 1, 6))
                postponed.append((row.id, delay, str(exc)))
                log.warning(
                    "storage cleanup postponed",
                    extra={"prefix": row.prefix, "error": str(exc), "in_s": delay},
                )
                continue
            done.append(row.id)
            if removed:
                log.info("objects removed", extra={"prefix": row.prefix, "count": removed})
        if due:
            async with self._pool.connection() as conn:
                for cleanup_id in done:
                    await db.finish_cleanup(conn, cleanup_id)
                for cleanup_id, delay, error in postponed:
                    await db.postpone_cleanup(conn, cleanup_id, delay, error)
        return len(due)
