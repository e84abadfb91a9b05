"""WatchUser: one LISTEN connection per process fans user changes out to every open stream.

A trigger on `users` NOTIFYs the user's id on channel `user_changes` at commit. The hub holds
the only listening connection (application_name `accounts-watch <pid>`) and wakes the streams
of that user; each stream then reads the row through the pool and sends it only if it differs
from the last one sent. After the listener reconnects every stream re-reads, since
notifications sent while it was away are lost.
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
        for sub in self._subscriptions.get(user_id, ()):
            sub.wake()

    def _wake_all(self) -> None:
        for subs in self._subscriptions.values():
            for sub in subs:
                sub.wake()


class Watcher:
    def __init__(self, pool: AsyncConnectionPool[db.Conn], hub: ChangeHub) -> None:
        self._pool = pool
        self._hub = hub

    async def watch(self, user_id: str) -> AsyncGenerator[db.UserRow, None]:
        """The user now, then each different state; NotFound once it is (or was) deleted,
        Unavailable when the server shuts down. Ends when the caller stops iterating."""
        uid = validation.parse_id(user_id)
        with self._hub.subscribe(uid) as changes:
            last: db.UserRow | None = None
            while True:
                async with self._pool.connection() as conn:
                    user = await db.get_user(conn, uid)
                if user is None:
                    raise NotFound(f"user {uid} {'was deleted' if last else 'not found'}")
                if user != last:
                    last = user
                    yield user
                await changes.next_change()
