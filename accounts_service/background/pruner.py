"""Prunes what grows with traffic: published outbox events, used or expired uploads, and
request ids past their retention (the contract keeps them at least 24 h).

Each batch is one short statement over at most `batch` rows, committed at once, so pruning
never holds long locks. Several replicas: rows are taken with FOR UPDATE SKIP LOCKED, so
replicas pruning at once split the work and never wait for each other or for requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from accounts_service.adapters import db
from accounts_service.errors import AccountsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retention:
    """Seconds each kind of row is kept."""

    published_events: float  # after publishing
    request_ids: float  # after the user was created
    unused_uploads: float  # after the upload expired (used ones go once expired)


class Pruner:
    def __init__(
        self,
        pool: db.Pool,
        retention: Retention,
        every_seconds: float,
        batch: int = 1000,
    ) -> None:
        self._pool = pool
        self._keep = retention
        self._every = every_seconds
        self._batch = batch

    async def run(self, stop: asyncio.Event) -> None:
        """Prunes every `every_seconds` until `stop` is set; survives database outages."""
        while not stop.is_set():
            try:
                pruned = await self.prune()
                if any(pruned.values()):
                    log.info("pruned", extra=pruned)
            except AccountsError as exc:
                log.warning("pruning failed, will retry", extra={"error": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._every)

    async def prune(self) -> dict[str, int]:
        """One round over every table; returns how many rows each lost."""
        keep = self._keep
        return {
            "events": await self._batches(
                lambda c: db.prune_outbox(c, keep.published_events, self._batch)
            ),
            "uploads": await self._batches(
                lambda c: db.prune_uploads(c, keep.unused_uploads, self._batch)
            ),
            "request_ids": await self._batches(
                lambda c: db.prune_request_ids(c, keep.request_ids, self._batch)
            ),
        }

    async def _batches(self, statement: Callable[[db.Conn], Awaitable[int]]) -> int:
        """Runs `statement` (one batch, its own commit) until a batch comes back short."""
        total = 0
        while True:
            async with self._pool.connection() as conn:
                count = await statement(conn)
            total += count
            if count < self._batch:
                return total
