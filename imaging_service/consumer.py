"""The worker loop: fetch thumbnail requests, run them, and carry out what decision.py decides.

decision.decide says, for each delivery, whether to run the job and then how to settle it
(ack / nak with delay / term / give up); this module only does it: runs the handler, sends the
ack, counts, logs, and remembers a retried result for the next delivery of that message.

Heartbeats (``in_progress``, every third of the ack wait) keep a running job leased for at most
``max_job_seconds``: the render budget of the largest image plus a margin for storage and
accounts. A job still running then is cancelled and counts as RETRY ("JobTimeout"); a render
past its own budget has ended long before, as TOO_COMPLEX (FAILED).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from accounts.v1.events_pb2 import ThumbnailRequested
from google.protobuf.message import DecodeError
from opentelemetry import trace

from imaging_service.bus import Delivery, JobQueue, QueueStats
from imaging_service.decision import (
    NOT_FINISHED,
    Action,
    Message,
    Outcome,
    Result,
    RetryPolicy,
    Verb,
    decide,
)
from imaging_service.errors import AccountsRejected, QueueUnavailable, TransientError, UserGone
from imaging_service.metrics import Metrics, seconds_since
from imaging_service.tracing import consumer_span

log = logging.getLogger(__name__)

FETCH_TIMEOUT_SECONDS = 1.0  # also how long shutdown waits for the fetch in flight
_RESULTS_KEPT = 10_000


def default_jitter() -> float:
    """Spreads the retries of jobs that failed together, e.g. when S3 came back."""
    return random.uniform(0.5, 1.0)


def decode(data: bytes) -> ThumbnailRequested | None:
    """The event, or None when it is not one we can act on."""
    try:
        event = ThumbnailRequested.FromString(data)
    except DecodeError:
        return None
    if not (event.user_id and event.avatar_object and event.avatar_generation > 0):
        return None
    return event


Handle = Callable[[ThumbnailRequested], Awaitable[Result]]
GiveUp = Callable[[ThumbnailRequested, str], Awaitable[None]]


class Consumer:
    """Runs up to ``slots`` jobs at once; the only place that acks, naks or terms."""

    def __init__(
        self,
        handle: Handle,
        give_up: GiveUp,
        policy: RetryPolicy,
        slots: int,
        ack_wait: float,
        max_job_seconds: float | None = None,  # None: no bound
        jitter: Callable[[], float] = default_jitter,
        metrics: Metrics | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._handle = handle
        self._metrics = metrics or Metrics()
        self._tracer = tracer  # None: tracing is off, and no span is made
        self._give_up = give_up
        self._policy = policy
        self._slots = slots
        self._heartbeat_every = ack_wait / 3
        self._max_job_seconds = max_job_seconds
        self._jitter = jitter
        self._queue: JobQueue | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        # stream sequence -> what its last attempt in this process came to (Action.remember)
        self._last: dict[int, Result] = {}
        self.processed = 0
        self.failed = 0

    async def stats(self) -> QueueStats:
        if self._queue is None:
            raise QueueUnavailable("not connected to NATS yet")
        info = await self._queue.info()
        dead = await self._queue.dead_lettered()
        return QueueStats(
            info.pending, info.ack_pending, info.redelivered, dead, self.processed, self.failed
        )

    async def replay(self, limit: int) -> int:
        """Dead-lettered requests back on the queue; how many."""
        if self._queue is None:
            raise QueueUnavailable("not connected to NATS yet")
        return await self._queue.replay(limit)

    async def run(self, queue: JobQueue, stop: asyncio.Event) -> None:
        """Fetches while there is a free slot, until ``stop`` is set; then call ``finish``."""
        self._queue = queue
        outage = False
        while not stop.is_set():
            if len(self._jobs) >= self._slots:
                await _first_of(self._jobs, stop)
                continue
            try:
                delivery = await queue.fetch(FETCH_TIMEOUT_SECONDS)
            except QueueUnavailable as exc:
                if not outage:
                    log.warning("cannot fetch, will keep trying", extra={"error": str(exc)})
                outage = True
                await _first_of(set(), stop, seconds=1.0)
                continue
            if outage:
                log.info("fetching again")
                outage = False
            if delivery is None:
                continue
            if stop.is_set():
                await delivery.nak()
                break
            job = asyncio.create_task(self._process(delivery))
            self._jobs.add(job)
            job.add_done_callback(self._jobs.discard)

    async def finish(self, grace_seconds: float) -> None:
        """Waits up to ``grace_seconds`` for running jobs, then hands the rest back."""
        if not self._jobs:
            return
        _, late = await asyncio.wait(set(self._jobs), timeout=grace_seconds)
        for job in late:
            job.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def _process(self, delivery: Delivery) -> None:
        """Handles one delivery, in a CONSUMER span that continues the publisher's trace when
        tracing is on."""
        queued = seconds_since(delivery.stored_at)
        self._metrics.stage_seconds.labels("queue_wait").observe(queued)
        if self._tracer is None:
            await self._run_job(delivery)
            return
        message_id = delivery.headers.get("Nats-Msg-Id", "")
        with consumer_span(
            self._tracer, delivery.headers, delivery.subject, message_id, delivery.attempt
        ):
            await self._run_job(delivery)

    async def _run_job(self, delivery: Delivery) -> None:
        started = time.monotonic()
        event = decode(delivery.data)
        message = Message(
            delivery.attempt, event is not None, last=self._last.get(delivery.stream_seq)
        )
        if event is None:
            log.error("undecodable thumbnail request", extra={"seq": delivery.stream_seq})
            await self._carry_out(delivery, self._decide(message, None))
            return
        fields = {
            "user_id": event.user_id,
            "event_id": event.event_id,
            "generation": event.avatar_generation,
            "attempt": delivery.attempt,
        }
        heartbeat = asyncio.create_task(self._heartbeat(delivery, started))
        result = message.last or NOT_FINISHED  # unless it runs
        try:
            action = self._decide(message, None)
            if action.verb is Verb.RUN:
                result = await self._attempt(event)
                action = self._decide(message, result)
            outcome = await self._carry_out(delivery, action, event)
        except asyncio.CancelledError:
            shutdown = Message(delivery.attempt, shutdown=True)
            await self._carry_out(delivery, self._decide(shutdown, None))
            log.warning("job handed back at shutdown", extra=fields | {"outcome": "handed_back"})
            raise
        except Exception:  # unsettled: JetStream redelivers it after the ack wait
            self._metrics.jobs_retried.labels("Crashed").inc()
            log.exception("job crashed", extra=fields | {"outcome": "crashed"})
            return
        finally:
            heartbeat.cancel()
        duration_ms = round((time.monotonic() - started) * 1000)
        extra = fields | {"outcome": outcome, "duration_ms": duration_ms, "detail": result.detail}
        if action.verb is Verb.NAK and action.delay is not None:
            extra["retry_in_s"] = round(action.delay, 2)
        log.info("job finished", extra=extra)

    def _decide(self, message: Message, result: Result | None) -> Action:
        return decide(message, result, self._policy, self._jitter())

    async def _attempt(self, event: ThumbnailRequested) -> Result:
        """The handler's result; a timeout or a bug becomes RETRY (and then GAVE_UP)."""
        bound = asyncio.timeout(self._max_job_seconds)
        try:
            async with bound:
                return await self._handle(event)
        except Exception as exc:  # a bug must not kill the worker loop
            if isinstance(exc, TimeoutError) and bound.expired():
                detail = f"the job took longer than {self._max_job_seconds:g} s"
                return Result(Outcome.RETRY, detail, reason="JobTimeout")
            log.exception("handler failed unexpectedly", extra={"event_id": event.event_id})
            return Result(Outcome.RETRY, f"internal error: {exc!r}", reason="InternalError")

    async def _carry_out(
        self, delivery: Delivery, action: Action, event: ThumbnailRequested | None = None
    ) -> str:
        """Settles the delivery as ``action`` says; returns the outcome name for the log line."""
        self._remember(delivery.stream_seq, action.remember)
        if action.verb is Verb.NAK:
            await delivery.nak(action.delay)
            self._metrics.jobs_retried.labels(action.label).inc()
            return "retry"
        if action.verb is Verb.ACK:
            await delivery.ack()
            self.processed += 1
            self._metrics.jobs_processed.labels(action.label).inc()
            return "done"
        if action.verb is Verb.GIVE_UP:
            assert event is not None, "only a decoded request is given up"
            if not await self._give_up_recorded(delivery, event, action):
                return "gave_up_unrecorded"
        await delivery.term()
        self.failed += 1
        self._metrics.jobs_failed.labels(action.label).inc()
        return "gave_up" if action.verb is Verb.GIVE_UP else "failed"

    async def _give_up_recorded(
        self, delivery: Delivery, event: ThumbnailRequested, action: Action
    ) -> bool:
        """Reports GAVE_UP and dead-letters; False (and nakked) if a step failed transiently."""
        try:
            await self._give_up(event, action.reason)
            assert self._queue is not None
            await self._queue.dead_letter(delivery, event.event_id, action.reason)
        except (TransientError, QueueUnavailable) as exc:
            await delivery.nak(action.delay)
            self._metrics.jobs_retried.labels(type(exc).__name__).inc()
            log.warning("giving up not recorded, will retry", extra={"error": str(exc)})
            return False
        except (UserGone, AccountsRejected) as exc:
            log.warning("GAVE_UP not reported", extra={"error": str(exc)})
        else:
            self._metrics.dead_letters.inc()
        self._remember(delivery.stream_seq, None)
        return True

    def _remember(self, seq: int, result: Result | None) -> None:
        self._last.pop(seq, None)
        if result is None:
            return
        if len(self._last) >= _RESULTS_KEPT:
            del self._last[next(iter(self._last))]
        self._last[seq] = result

    async def _heartbeat(self, delivery: Delivery, started: float) -> None:
        """Keeps the message leased while the job runs, ``max_job_seconds`` from ``started``
        (time.monotonic) at most: past that it is no longer extended even if the job hangs."""
        limit = self._max_job_seconds
        while True:
            await asyncio.sleep(self._heartbeat_every)
            if limit is not None and time.monotonic() - started >= limit:
                return
            await delivery.in_progress()


async def _first_of(
    tasks: set[asyncio.Task[None]], stop: asyncio.Event, seconds: float | None = None
) -> None:
    """Returns when a task ends, ``stop`` is set or ``seconds`` pass."""
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait(tasks | {stopping}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
