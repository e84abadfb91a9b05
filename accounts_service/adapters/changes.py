"""User changes from PostgreSQL: one LISTEN connection per process fans them out to every
subscriber (the WatchUser streams, see watch.py).

A trigger on `users` NOTIFYs the user's id on channel `user_changes` at commit. The hub holds
the only listening connection (application_name `accounts-watch <pid>`) and wakes the
subscriptions of that user. After the listener reconnects it wakes them all, since
notifications sent while it was away are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Iterator

from accounts_service.adapters import db
from accounts_service.errors import Unavailable

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
                async with db.listening(self._dsn, CHANNEL, self.application_name) as payloads:
                    self._wake_all()  # changes may have been missed while away
                    async for payload in payloads:
                        self._dispatch(payload)
            except Unavailable as exc:
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
