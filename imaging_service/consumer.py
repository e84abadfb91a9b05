"""The worker loop: fetch thumbnail requests, run them, and decide ack / nak(delay) / term.

Decision table (``decide``; ``attempt`` is the delivery count, ``max_deliver`` = 1 + retries):

    handler outcome    attempt               action
    DONE               any                   ack
    PERMANENT_DONE     any                   term
    RETRY              < max_deliver         nak(delay = min(cap, base * 2**(attempt-1)) * jitter)
    RETRY, waiting     any                   nak(delay) as above: accounts is unreachable, so no
      for accounts                           result could be reported; the job waits for it
    RETRY              >= max_deliver        report GAVE_UP, copy to the dead-letter stream, term
                                             (nak(cap) instead if either step failed transiently)
    (not handled)      > max_deliver         as RETRY at >= max_deliver, without running the job:
                                             an attempt did not finish (worker killed, or a GAVE_UP
                                             report failed), so it is not tried again; unless the
                                             last attempt was only waiting for accounts
    undecodable payload                      term
    shutdown before the job finished         nak() at once: another worker takes it

Heartbeats (``in_progress``, every third of the ack wait) keep a running job leased for at most
``max_job_seconds``: the render budget of the largest image plus a margin for storage and
accounts. A job still running then is cancelled and counts as RETRY ("JobTimeout"); a render
past its own budget has ended long before, as TOO_COMPLEX (PERMANENT_DONE).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from accounts.v1.events_pb2 import ThumbnailRequested
from google.protobuf.message import DecodeError
from opentelemetry import trace

from imaging_service.bus import Delivery, JobQueue
from imaging_service.errors import AccountsRejected, QueueUnavailable, TransientError, UserGone
from imaging_service.handler import Outcome, Result
from imaging_service.metrics import Metrics, seconds_since
from imaging_service.tracing import consumer_span

log = logging.getLogger(__name__)

FETCH_TIMEOUT_SECONDS = 1.0  # also how long shutdown waits for the fetch in flight
_LAST_ERRORS_KEPT = 10_000


class Action(enum.Enum):
    ACK = "ack"
    NAK = "nak"
    TERM = "term"
    GIVE_UP = "give_up"


@dataclass(frozen=True)
class RetryPolicy:
    """``max_deliver`` counts every delivery (1 + retries); times in seconds."""

    max_deliver: int
    base: float
    cap: float

    def delay(self, attempt: int, jitter: float) -> float:
        """Back-off before delivery ``attempt + 1``; ``jitter`` in [0.5, 1] keeps it <= cap."""
        doublings = min(max(attempt - 1, 0), 64)  # 2.0**1024 would overflow
        return min(self.cap, self.base * 2.0**doublings) * jitter


def default_jitter() -> float:
    """Spreads the retries of jobs that failed together, e.g. when S3 came back."""
    return random.uniform(0.5, 1.0)


def decide(result: Result, attempt: int, max_deliver: int) -> Action:
    if result.outcome is Outcome.DONE:
        return Action.ACK
    if result.outcome is Outcome.PERMANENT_DONE:
        return Action.TERM
    if result.waiting_for_accounts:
        return Action.NAK
    return Action.GIVE_UP if attempt >= max_deliver else Action.NAK


def decode(data: bytes) -> ThumbnailRequested | None:
    """The event, or None when it is not one we can act on."""
    try:
        event = ThumbnailRequested.FromString(data)
    except DecodeError:
        return None
    if not (event.user_id and event.avatar_object and event.avatar_generation > 0):
        return None
    return event


@dataclass(frozen=True)
class QueueStats:
    pending: int
    ack_pending: int
    redelivered: int
    dead_lettered: int
    processed: int
    failed: int


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
        self._tracer = tracer or trace.NoOpTracer()
        self._give_up = give_up
        self._policy = policy
        self._slots = slots
        self._heartbeat_every = ack_wait / 3
        self._max_job_seconds = max_job_seconds
        self._jitter = jitter
        self._queue: JobQueue | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        # stream sequence -> how its last attempt in this process failed
        self._last_error: dict[int, Result] = {}
        self._retry_in: dict[int, float] = {}  # stream sequence -> back-off, for the log line
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
        """Handles one delivery in a CONSUMER span that continues the publisher's trace."""
        queued = seconds_since(delivery.stored_at)
        self._metrics.stage_seconds.labels("queue_wait").observe(queued)
        message_id = delivery.headers.get("Nats-Msg-Id", "")
        with consumer_span(
            self._tracer, delivery.headers, delivery.subject, message_id, delivery.attempt
        ):
            await self._run_job(delivery)

    async def _run_job(self, delivery: Delivery) -> None:
        started = time.monotonic()
        event = decode(delivery.data)
        if event is None:
            log.error("undecodable thumbnail request", extra={"seq": delivery.stream_seq})
            await delivery.term()
            self.failed += 1
            self._metrics.jobs_failed.labels("UNDECODABLE").inc()
            return
        fields = {
            "user_id": event.user_id,
            "event_id": event.event_id,
            "generation": event.avatar_generation,
            "attempt": delivery.attempt,
        }
        heartbeat = asyncio.create_task(self._heartbeat(delivery, started))
        try:
            result = await self._attempt(event, delivery)
            action = decide(result, delivery.attempt, self._policy.max_deliver)
            outcome = await self._settle(delivery, event, action, result)
        except asyncio.CancelledError:
            await delivery.nak()
            self._metrics.jobs_retried.labels("Shutdown").inc()
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
        if (retry_in := self._retry_in.pop(delivery.stream_seq, None)) is not None:
            extra["retry_in_s"] = round(retry_in, 2)
        log.info("job finished", extra=extra)

    async def _attempt(self, event: ThumbnailRequested, delivery: Delivery) -> Result:
        last = self._last_error.get(delivery.stream_seq)
        if delivery.attempt > self._policy.max_deliver and not (last and last.waiting_for_accounts):
            return last or Result(Outcome.RETRY, "an attempt did not finish")
        bound = asyncio.timeout(self._max_job_seconds)
        try:
            async with bound:
                return await self._handle(event)
        except Exception as exc:  # a bug must not kill the worker loop; retry, then GAVE_UP
            if isinstance(exc, TimeoutError) and bound.expired():
                detail = f"the job took longer than {self._max_job_seconds:g} s"
                return Result(Outcome.RETRY, detail, reason="JobTimeout")
            log.exception("handler failed unexpectedly", extra={"event_id": event.event_id})
            return Result(Outcome.RETRY, f"internal error: {exc!r}", reason="InternalError")

    async def _settle(
        self, delivery: Delivery, event: ThumbnailRequested, action: Action, result: Result
    ) -> str:
        """Sends the ack decided on; returns the outcome name for the log line."""
        seq = delivery.stream_seq
        label = result.reason or result.outcome.value  # of the job counters
        if action is Action.NAK:
            self._remember(seq, result)
            delay = self._policy.delay(
                min(delivery.attempt, self._policy.max_deliver), self._jitter()
            )
            await delivery.nak(delay)
            self._retry_in[seq] = delay
            self._metrics.jobs_retried.labels(label).inc()
            return "retry"
        self._last_error.pop(seq, None)
        if action is Action.ACK:
            await delivery.ack()
            self.processed += 1
            self._metrics.jobs_processed.labels(label).inc()
            return "done"
        if action is Action.TERM:
            await delivery.term()
            self.failed += 1
            self._metrics.jobs_failed.labels(label).inc()
            return "failed"
        attempts = min(delivery.attempt, self._policy.max_deliver)
        reason = f"gave up after {attempts} attempts: {result.detail}"
        try:
            await self._give_up(event, reason)
            assert self._queue is not None
            await self._queue.dead_letter(delivery, event.event_id, reason)
        except (TransientError, QueueUnavailable) as exc:
            self._remember(seq, result)
            await delivery.nak(self._policy.cap)
            self._metrics.jobs_retried.labels(type(exc).__name__).inc()
            log.warning("giving up not recorded, will retry", extra={"error": str(exc)})
            return "gave_up_unrecorded"
        except (UserGone, AccountsRejected) as exc:
            log.warning("GAVE_UP not reported", extra={"error": str(exc)})
        else:
            self._metrics.dead_letters.inc()
        await delivery.term()
        self.failed += 1
        self._metrics.jobs_failed.labels("GAVE_UP").inc()
        return "gave_up"

    def _remember(self, seq: int, result: Result) -> None:
        self._last_error.pop(seq, None)
        if len(self._last_error) >= _LAST_ERRORS_KEPT:
            del self._last_error[next(iter(self._last_error))]
        self._last_error[seq] = result

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
