"""Re-requests thumbnails for users PENDING too long with nothing left in the outbox.

It closes the gaps a lost message, an exhausted retry budget or an operator mistake (a purged
stream, a deleted consumer) could leave: no user stays PENDING forever. The event repeats the
user's current generation, so a duplicate costs at most one render and changes nothing.

A sweep is one short transaction with no network call in it (the events go to the outbox; the
relay publishes them). Several replicas: stalled users are locked with FOR UPDATE SKIP LOCKED,
so each is re-requested by one replica, and once it has an event waiting, by none. A replica
whose statement began before another's commit finds the row's lock released and PostgreSQL
checks the row again as committed: the re-request moved `requested_at`, so it no longer
qualifies and is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from accounts_service.adapters import db
from accounts_service.errors import AccountsError
from accounts_service.events import request_thumbnails

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self,
        pool: db.Pool,
        after_seconds: float,
        every_seconds: float,
        batch: int = 100,
    ) -> None:
        self._pool = pool
        self._after = after_seconds
        self._every = every_seconds
        self._batch = batch

    async def run(self, stop: asyncio.Event) -> None:
        """Sweeps every `every_seconds` until `stop` is set; survives database outages."""
        while not stop.is_set():
            try:
                while await self.sweep() == self._batch:
                    pass
            except AccountsError as exc:
                log.warning("reconciler sweep failed, will retry", extra={"error": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._every)

    async def sweep(self) -> int:
        """One batch: returns how many users were re-requested."""
        async with self._pool.connection() as conn, conn.transaction():
            stalled = await db.claim_stalled(conn, self._after, self._batch)
            for user in stalled:
                event_id = await request_thumbnails(conn, user)
                log.warning(
                    "user stalled in PENDING, thumbnails requested again",
                    extra={"user_id": str(user.id), "event_id": str(event_id),
                           "generation": user.avatar_generation},
                )  # fmt: skip
        return len(stalled)
