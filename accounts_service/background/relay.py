"""The outbox relay: lease unpublished events, publish with Nats-Msg-Id, mark them published.

No transaction is open while NATS is called: a batch is leased by one UPDATE (committed at
once), published with no connection held, then marked published (or released) in a second
short statement. A crash between publish and mark only makes a duplicate, which JetStream drops
by its Nats-Msg-Id within the stream's duplicate window (the lease is far shorter).

Several replicas: each leases rows with FOR UPDATE SKIP LOCKED and skips rows leased by
another until that lease runs out, so every event goes out once, and a dead relay's batch is
taken over after `lease_seconds`. The relay wakes on LISTEN/NOTIFY and also polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from opentelemetry import trace

from accounts_service.adapters import db
from accounts_service.adapters.bus import Bus
from accounts_service.errors import AccountsError, PublishFailed, Unavailable
from accounts_service.metrics import Metrics
from accounts_service.tracing import producer_span

log = logging.getLogger(__name__)

CHANNEL = "outbox"


class OutboxRelay:
    def __init__(
        self,
        pool: db.Pool,
        bus: Bus,
        database_url: str,
        poll_seconds: float,
        batch: int = 100,
        metrics: Metrics | None = None,
        tracer: trace.Tracer | None = None,
        lease_seconds: float = 30.0,
    ) -> None:
        self._pool = pool
        self._metrics = metrics or Metrics()
        self._tracer = tracer or trace.NoOpTracer()
        self._bus = bus
        self._dsn = database_url
        self._poll = poll_seconds
        self._batch = batch
        self._lease = lease_seconds
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Publishes until `stop` is set; never raises for NATS or PostgreSQL outages."""
        listener = asyncio.create_task(self._listen(stop))
        failures = 0
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    sent = await self.publish_pending()
                except AccountsError as exc:
                    if isinstance(exc, PublishFailed):  # PostgreSQL answers: count what waits
                        await self._count_backlog()
                    failures += 1
                    delay = min(self._poll, 0.2 * 2**failures)
                    # One warning per outage; the rest at debug, so the log stays readable.
                    level = logging.WARNING if failures == 1 else logging.DEBUG
                    log.log(level, "outbox relay waiting", extra={"error": str(exc)})
                    await self._sleep(stop, delay)
                    continue
                if failures:
                    log.info("outbox relay publishing again", extra={"failed_rounds": failures})
                    failures = 0
                if sent < self._batch:
                    await self._count_backlog()
                    await self._sleep(stop, self._poll)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def publish_pending(self) -> int:
        """Publishes one batch; returns how many events went out. Raises PublishFailed (after
        marking what went out) when NATS refuses one."""
        async with self._pool.connection() as conn:
            rows = await db.claim_events(conn, self._batch, self._lease)
        if not rows:
            return 0
        # Stop well inside the lease, so no other relay takes these rows while we publish.
        deadline = time.monotonic() + self._lease / 2
        sent: list[db.OutboxRow] = []
        failure: PublishFailed | None = None
        for row in rows:
            if time.monotonic() > deadline:
                break
            try:
                await self._publish(row)
            except PublishFailed as exc:
                failure = exc
                break
            sent.append(row)
        unsent = [r.event_id for r in rows[len(sent) :]]
        async with self._pool.connection() as conn:
            await self._mark(conn, sent)
            if failure is not None:
                await db.record_publish_error(conn, unsent[:1], str(failure))
            await db.release_events(conn, unsent)
        self._log_sent(sent)
        if failure is not None:
            self._metrics.outbox_publish_errors.inc()
            raise failure
        return len(sent)

    async def _publish(self, row: db.OutboxRow) -> None:
        """Publishes in a PRODUCER span that continues the trace of the request behind it."""
        event_id = str(row.event_id)
        with producer_span(self._tracer, row.subject, event_id, row.traceparent) as headers:
            await self._bus.publish(row.subject, row.payload, event_id, headers)

    async def _mark(self, conn: db.Conn, sent: list[db.OutboxRow]) -> None:
        for lag in await db.mark_published(conn, [r.event_id for r in sent]):
            self._metrics.outbox_publish_lag.observe(max(lag, 0.0))
        self._metrics.outbox_published.inc(len(sent))

    async def _count_backlog(self) -> None:
        """Sets the backlog gauge; an unreachable database leaves it as it was."""
        try:
            async with self._pool.connection() as conn:
                self._metrics.outbox_unpublished.set(await db.pending_events(conn))
        except AccountsError as exc:
            log.debug("outbox backlog not counted", extra={"error": str(exc)})

    @staticmethod
    def _log_sent(rows: list[db.OutboxRow]) -> None:
        for row in rows:
            log.info(
                "event published", extra={"event_id": str(row.event_id), "subject": row.subject}
            )

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        """Waits for a NOTIFY, `stop`, or the timeout, whichever comes first."""
        waiters = [asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())]
        _, pending = await asyncio.wait(
            waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()

    async def _listen(self, stop: asyncio.Event) -> None:
        """Holds one LISTEN connection, reconnecting after PostgreSQL restarts."""
        while not stop.is_set():
            try:
                async with db.listening(self._dsn, CHANNEL, "accounts-outbox") as payloads:
                    self._wake.set()  # notifications may have been missed while away
                    async for _ in payloads:
                        self._wake.set()
            except Unavailable as exc:
                log.warning("outbox listener reconnecting", extra={"error": str(exc)})
                await self._sleep_plain(stop, 1.0)

    @staticmethod
    async def _sleep_plain(stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)
