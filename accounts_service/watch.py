"""WatchUser: one LISTEN connection per process fans user changes out to every open stream.

A trigger on `users` NOTIFYs the user's id on channel `user_changes` at commit. The hub holds
the only listening connection (application_name `accounts-watch <pid>`) and wakes the streams
of that user; each stream then reads the row through the pool and sends it only if it differs
from the last one sent. After the listener reconnects every stream re-reads, since
notifications sent while it was away are lost. Streams of one user woken together share one
read, and streams read a few at a time (`max_reads`), so that a thousand of them waking at once
queue here, not in the pool: other calls still get a connection, and the pool's own queue
(fail-fast) never overflows with watchers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncGenerator, Iterator

import psycopg
from psycopg_pool import AsyncConnectionPool

from accounts_service import db, validation
from accounts_service.errors import NotFound, Unavailable

log = logging.getLogger(__name__)

CHANNEL = "user_changes"
APPLICATION_NAME = "accounts-watch"


class Subscription:
    def __init__(self, hub: ChangeHub) -> None:
        self._hub = hub
        self._changed = asyncio.Event()

    def wake(self) -> None:
        self._changed.set()

    async def next_change(self) -> None:
        """Returns after the next notification; Unavailable once the hub has closed."""
        await self._changed.wait()
        self._changed.clear()
        if self._hub.closed:
            raise Unavailable("the server is shutting down; watch again")


class ChangeHub:
    def __init__(self, dsn: str, reconnect_seconds: float = 1.0) -> None:
        self._dsn = dsn
        self.application_name = f"{APPLICATION_NAME} {os.getpid()}"
        self._reconnect = reconnect_seconds
        self._subscriptions: dict[uuid.UUID, set[Subscription]] = {}
        self.sequence = 0  # counts wake-ups: a read begun at n saw every change woken before n
        self.closed = False

    @property
    def watchers(self) -> int:
        return sum(len(subs) for subs in self._subscriptions.values())

    @contextlib.contextmanager
    def subscribe(self, user_id: uuid.UUID) -> Iterator[Subscription]:
        if self.closed:
            raise Unavailable("the server is shutting down; watch again")
        sub = Subscription(self)
        self._subscriptions.setdefault(user_id, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._subscriptions.get(user_id, set())
            subs.discard(sub)
            if not subs:
                self._subscriptions.pop(user_id, None)

    def close(self) -> None:
        """Ends every stream (with UNAVAILABLE) and refuses new ones: the server is stopping."""
        self.closed = True
        self._wake_all()

    async def run(self, stop: asyncio.Event) -> None:
        """Listens until `stop` is set; never raises for PostgreSQL outages."""
        listener = asyncio.create_task(self._listen(stop))
        try:
            await stop.wait()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _listen(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with await db.listen(self._dsn, CHANNEL, self.application_name) as conn:
                    self._wake_all()  # changes may have been missed while away
                    async for notify in conn.notifies():
                        self._dispatch(notify.payload)
            except psycopg.Error as exc:
                log.warning("watch listener reconnecting", extra={"error": str(exc)})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._reconnect)

    def _dispatch(self, payload: str) -> None:
        try:
            user_id = uuid.UUID(payload)
        except ValueError:
            return
        self.sequence += 1
        for sub in self._subscriptions.get(user_id, ()):
            sub.wake()

    def _wake_all(self) -> None:
        self.sequence += 1
        for subs in self._subscriptions.values():
            for sub in subs:
                sub.wake()


class Watcher:
    def __init__(
        self, pool: AsyncConnectionPool[db.Conn], hub: ChangeHub, max_reads: int = 4
    ) -> None:
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
