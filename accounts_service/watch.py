"""WatchUser: the user now, then each different state, woken by the change hub.

Each stream reads the row through the pool when the hub wakes it and sends it only if it
differs from the last one sent. Streams of one user woken together share one read, and streams
read a few at a time (`max_reads`), so that a thousand of them waking at once queue here, not
in the pool: other calls still get a connection, and the pool's own queue (fail-fast) never
overflows with watchers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator

from accounts_service import validation
from accounts_service.adapters import db
from accounts_service.adapters.changes import ChangeHub
from accounts_service.errors import NotFound


class Watcher:
    def __init__(self, pool: db.Pool, hub: ChangeHub, max_reads: int = 4) -> None:
        self._pool = pool
        self._hub = hub
        self._reads = asyncio.Semaphore(max_reads)
        self._reading: dict[uuid.UUID, tuple[int, asyncio.Future[db.UserRow | None]]] = {}

    async def watch(self, user_id: str) -> AsyncGenerator[db.UserRow, None]:
        """The user now, then each different state; NotFound once it is (or was) deleted,
        Unavailable when the server shuts down. Ends when the caller stops iterating."""
        uid = validation.parse_id(user_id)
        with self._hub.subscribe(uid) as changes:
            last: db.UserRow | None = None
            while True:
                user = await self._read(uid)
                if user is None:
                    raise NotFound(f"user {uid} {'was deleted' if last else 'not found'}")
                if user != last:
                    last = user
                    yield user
                await changes.next_change()

    async def _read(self, uid: uuid.UUID) -> db.UserRow | None:
        """The row as read by a read begun no earlier than now (joined if one is under way)."""
        since = self._hub.sequence
        begun, reading = self._reading.get(uid, (-1, None))
        if reading is None or begun < since:
            reading = asyncio.ensure_future(self._fetch(uid))
            self._reading[uid] = (since, reading)
            reading.add_done_callback(lambda done: self._forget(uid, done))
        # Shielded: a stream that goes away must not cancel the read others wait for.
        return await asyncio.shield(reading)

    async def _fetch(self, uid: uuid.UUID) -> db.UserRow | None:
        async with self._reads, self._pool.connection() as conn:
            return await db.get_user(conn, uid)

    def _forget(self, uid: uuid.UUID, done: asyncio.Future[db.UserRow | None]) -> None:
        if self._reading.get(uid, (0, None))[1] is done:
            del self._reading[uid]
        if not done.cancelled():
            done.exception()  # its waiters got it; if they all went away, nobody needs it
