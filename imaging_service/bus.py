"""NATS JetStream as the worker sees it: the queue (a bound pull subscription on the durable
consumer), its deliveries, the dead-letter stream and its replay. Every NATS error becomes
QueueUnavailable here (settling a delivery only logs it); streams.py creates what this binds to."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from credentials.nats_auth import NatsAuth
from credentials.nats_connect import connect_options
from imaging_service.errors import QueueUnavailable
from imaging_service.streams import QueueConfig, ensure

log = logging.getLogger(__name__)
# Replies and pulled messages come to inboxes under this prefix, the only subjects the imaging
# NATS user may subscribe to (deploy/k8s/overlays/dev/nats/authorization.conf).
INBOX_PREFIX = "_INBOX.imaging"

# Fetching from a deleted consumer just times out, so an idle worker checks it is still there.
_RECHECK_IDLE_SECONDS = 30.0
_NATS_ERRORS = (nats.errors.Error, OSError)


@dataclass(frozen=True)
class QueueInfo:
    pending: int
    ack_pending: int
    redelivered: int


@dataclass(frozen=True)
class QueueStats:
    """The queue as GetQueueStats and the gauges show it: ``QueueInfo``, the dead-letter
    stream's size, and the requests this worker processed (acked) and failed (termed)."""

    pending: int
    ack_pending: int
    redelivered: int
    dead_lettered: int
    processed: int
    failed: int


class Delivery:
    """One delivered message. Settling twice is a no-op; a lost ack only means a redelivery,
    which the handler tolerates, so connection errors here are logged, not raised."""

    def __init__(self, msg: Msg) -> None:
        self._msg = msg
        self.data = msg.data
        self.subject = msg.subject
        self.attempt = msg.metadata.num_delivered
        self.stream_seq = msg.metadata.sequence.stream
        self.stored_at = msg.metadata.timestamp  # when the stream stored it (NATS's clock)
        self.headers: dict[str, str] = dict(msg.headers or {})  # traceparent, Nats-Msg-Id
        self.settled = False

    async def ack(self) -> None:
        await self._settle("ack", self._msg.ack)

    async def term(self) -> None:
        await self._settle("term", self._msg.term)

    async def nak(self, delay: float | None = None) -> None:
        """Redelivered after ``delay`` seconds; at once when None."""
        await self._settle("nak", functools.partial(self._msg.nak, delay=delay))

    async def in_progress(self) -> None:
        """Resets the server's ack wait for this message."""
        if self.settled:
            return
        try:
            await self._msg.in_progress()
        except _NATS_ERRORS as exc:
            log.debug("in-progress not sent", extra={"seq": self.stream_seq, "error": repr(exc)})

    async def _settle(self, what: str, send: Callable[[], Awaitable[None]]) -> None:
        if self.settled:
            return
        self.settled = True
        try:
            await send()
        except _NATS_ERRORS as exc:
            log.warning(f"{what} not sent", extra={"seq": self.stream_seq, "error": repr(exc)})


class JobQueue:
    """A bound pull subscription on the durable consumer."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        sub: JetStreamContext.PullSubscription,
        config: QueueConfig,
    ) -> None:
        self._nc = nc
        self._js = js
        self._sub = sub
        self._config = config
        self._last_seen = time.monotonic()

    async def fetch(self, wait_seconds: float) -> Delivery | None:
        """The next message, or None after ``wait_seconds`` without one.
        Raises QueueUnavailable while NATS is unreachable."""
        try:
            msgs = await self._sub.fetch(1, timeout=wait_seconds)
        except nats.errors.TimeoutError:
            await self._recheck_when_idle()
            return None
        except _NATS_ERRORS as exc:
            raise QueueUnavailable(f"fetch failed: {type(exc).__name__}: {exc}") from exc
        self._last_seen = time.monotonic()
        return Delivery(msgs[0])

    async def info(self) -> QueueInfo:
        try:
            info = await self._js.consumer_info(self._config.stream, self._config.durable)
        except _NATS_ERRORS as exc:
            raise QueueUnavailable(f"consumer info: {type(exc).__name__}: {exc}") from exc
        return QueueInfo(
            pending=info.num_pending or 0,
            ack_pending=info.num_ack_pending or 0,
            redelivered=info.num_redelivered or 0,
        )

    async def dead_letter(self, delivery: Delivery, event_id: str, reason: str) -> None:
        """Keeps a copy of the request on the dead-letter stream; raises QueueUnavailable."""
        headers = {
            "Nats-Msg-Id": f"dlq:{event_id}:{delivery.stream_seq}",
            "Avatars-Event-Id": event_id,
            "Avatars-Reason": reason[:1000],
        }
        try:
            await self._js.publish(
                self._config.dlq_subject, delivery.data, stream=self._config.dlq_stream,
                headers=headers, timeout=5,
            )  # fmt: skip
        except _NATS_ERRORS as exc:
            raise QueueUnavailable(f"dead-letter publish: {type(exc).__name__}: {exc}") from exc

    async def dead_lettered(self) -> int:
        try:
            info = await self._js.stream_info(self._config.dlq_stream)
        except _NATS_ERRORS as exc:
            raise QueueUnavailable(f"dead-letter info: {type(exc).__name__}: {exc}") from exc
        return int(info.state.messages)

    async def replay(self, limit: int) -> int:
        """Puts up to ``limit`` (0: all) dead-lettered requests back on the queue, oldest first.

        Each gets a fresh message id, since the original may still be in the de-duplication
        window; it is deleted from the dead-letter stream only once it is back on the queue.
        """
        dlq = self._config.dlq_stream
        replayed = 0
        try:
            state = (await self._js.stream_info(dlq)).state
            if not state.messages:
                # Never written to (first_seq 0: NATS answers a get of seq 0 with 400 "bad
                # request"), or every message already replayed.
                return 0
            for seq in range(max(state.first_seq, 1), state.last_seq + 1):
                if limit and replayed >= limit:
                    break
                try:
                    msg = await self._js.get_msg(dlq, seq)
                except nats.js.errors.NotFoundError:
                    continue  # deleted: already replayed
                event_id = (msg.headers or {}).get("Avatars-Event-Id", "")
                await self._js.publish(
                    self._config.replay_subject or self._config.subject, msg.data or b"",
                    stream=self._config.stream,
                    headers={"Nats-Msg-Id": f"replay:{event_id}:{dlq}:{seq}"}, timeout=5,
                )  # fmt: skip
                await self._js.delete_msg(dlq, seq)
                replayed += 1
                log.info("dead letter replayed", extra={"event_id": event_id, "dlq_seq": seq})
        except _NATS_ERRORS as exc:
            raise QueueUnavailable(f"replay: {type(exc).__name__}: {exc}") from exc
        return replayed

    async def close(self) -> None:
        """Unsubscribe first: draining after a timed-out fetch otherwise waits out drain_timeout."""
        try:
            await self._sub.unsubscribe()
            await self._nc.drain()
        except _NATS_ERRORS as exc:
            log.warning("nats drain failed, closing", extra={"error": repr(exc)})
            await self._nc.close()

    async def _recheck_when_idle(self) -> None:
        if time.monotonic() - self._last_seen < _RECHECK_IDLE_SECONDS:
            return
        self._last_seen = time.monotonic()
        try:
            try:
                await self._js.consumer_info(self._config.stream, self._config.durable)
            except nats.js.errors.NotFoundError:
                log.warning(
                    "consumer vanished, recreating", extra={"consumer": self._config.durable}
                )
                await ensure(self._js, self._config)
        except _NATS_ERRORS as exc:
            raise QueueUnavailable(f"consumer check: {type(exc).__name__}: {exc}") from exc


async def open_queue(config: QueueConfig) -> JobQueue:
    """Connects (waiting for NATS as long as it takes), ensures the stream and the consumer, binds.

    Cancel it to give up; nothing stays open then. Raises QueueUnavailable if NATS refuses us
    for good (e.g. the binding is not allowed).
    """
    nc = Client()
    try:
        await _connect(nc, config.url, config.auth)
        js = nc.jetstream()
        delay = 0.5
        while True:
            try:
                await ensure(js, config)
                break
            except _NATS_ERRORS as exc:
                log.warning(
                    "jetstream not ready, retrying", extra={"error": repr(exc), "retry_in": delay}
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        sub = await js.pull_subscribe_bind(consumer=config.durable, stream=config.stream)
    except _NATS_ERRORS as exc:
        await nc.close()
        raise QueueUnavailable(f"open: {type(exc).__name__}: {exc}") from exc
    except BaseException:
        await nc.close()
        raise
    return JobQueue(nc, js, sub, config)


async def _connect(nc: Client, url: str, auth: NatsAuth) -> None:
    """With unlimited reconnect attempts nats-py also retries the first connect forever, every
    ``reconnect_time_wait``; each failure reaches error_cb and is logged there."""

    async def on_error(exc: Exception) -> None:
        state = "connected" if nc.is_connected else "not connected"
        log.warning(f"nats error ({state})", extra={"error": repr(exc)})

    async def on_disconnected() -> None:
        if not (nc.is_draining or nc.is_closed):
            log.warning("nats disconnected")

    async def on_reconnected() -> None:
        log.info("nats reconnected")

    await nc.connect(
        **connect_options(url, auth, INBOX_PREFIX),
        name="imaging_service",
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=2,
        connect_timeout=2,
        drain_timeout=5,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
    )
    server = nc.connected_url
    where = f"{server.hostname}:{server.port}" if server else ""
    log.info("nats connected", extra={"server": where})  # not the netloc: it has the password
