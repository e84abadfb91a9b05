"""bus.py and the consumer loop against a real nats-server with JetStream (no mocks of NATS).

Every test uses its own uniquely named stream, so they share the session's server safely; the
restart test has a server of its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import nats
import pytest
from accounts.v1.events_pb2 import ThumbnailRequested
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, RetentionPolicy, StorageType, StreamConfig

from devstack.nats import NatsServer
from imaging_service.bus import Delivery, JobQueue, open_queue
from imaging_service.consumer import Consumer
from imaging_service.decision import Outcome, Result, RetryPolicy
from imaging_service.errors import AccountsUnavailable
from imaging_service.metrics import Metrics
from imaging_service.streams import QueueConfig, ensure

DEADLINE = 15.0


def unique_config(url: str, ack_wait: float = 30.0) -> QueueConfig:
    tag = uuid.uuid4().hex[:10]
    return QueueConfig(
        url=url,
        stream=f"IMAGING_TEST_{tag}",
        stream_subjects=(f"t{tag}.>",),
        subject=f"t{tag}.thumbnail.requested",
        durable="imaging",
        ack_wait=ack_wait,
        max_ack_pending=8,
    )


def event_bytes(user_id: str = "") -> bytes:
    return ThumbnailRequested(
        event_id=str(uuid.uuid4()),
        user_id=user_id or str(uuid.uuid4()),
        avatar_object="avatars/x/1/original",
        avatar_generation=1,
    ).SerializeToString()


async def eventually(check: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    """Polls ``check`` until true; fails naming ``what`` after DEADLINE seconds."""
    deadline = time.monotonic() + DEADLINE
    while True:
        result = check()
        if await result if isinstance(result, Awaitable) else result:
            return
        assert time.monotonic() < deadline, f"{what}: not within {DEADLINE:g} s"
        await asyncio.sleep(0.02)  # poll until the deadline


async def fetch_one(queue: JobQueue, seconds: float = DEADLINE) -> Delivery:
    delivery = await queue.fetch(seconds)
    assert delivery is not None, f"no message within {seconds:g} s"
    return delivery


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_server.url)
    yield nc.jetstream()
    await nc.close()


@asynccontextmanager
async def running(consumer: Consumer, config: QueueConfig) -> AsyncIterator[JobQueue]:
    queue = await open_queue(config)
    stop = asyncio.Event()
    loop = asyncio.create_task(consumer.run(queue, stop))
    try:
        yield queue
    finally:
        stop.set()
        await loop
        await consumer.finish(1.0)
        await queue.close()


class Jobs:
    """The handler side of the consumer, scripted by the test: outcomes in order, then DONE."""

    def __init__(self, *outcomes: Outcome) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[float, ThumbnailRequested]] = []
        self.gave_up: list[str] = []
        self.give_up_errors: list[Exception] = []
        self.release: asyncio.Event | None = None

    async def handle(self, event: ThumbnailRequested) -> Result:
        self.calls.append((time.monotonic(), event))
        if self.release is not None:
            await self.release.wait()
        outcome = self.outcomes.pop(0) if self.outcomes else Outcome.DONE
        return Result(outcome, "S3 down" if outcome is Outcome.RETRY else "")

    async def give_up(self, event: ThumbnailRequested, reason: str) -> None:
        if self.give_up_errors:
            raise self.give_up_errors.pop(0)
        self.gave_up.append(reason)

    def consumer(self, policy: RetryPolicy, ack_wait: float) -> Consumer:
        return Consumer(
            self.handle, self.give_up, policy, slots=2, ack_wait=ack_wait, jitter=lambda: 1.0
        )


async def test_ensure_creates_stream_and_consumer_and_updates_a_changed_ack_wait(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    config = unique_config(nats_server.url, ack_wait=5.0)
    await ensure(js, config)

    stream = (await js.stream_info(config.stream)).config
    assert stream.subjects == list(config.stream_subjects)
    assert stream.storage == StorageType.FILE
    assert stream.duplicate_window == 20 * 60
    consumer = (await js.consumer_info(config.stream, "imaging")).config
    assert consumer.ack_policy == AckPolicy.EXPLICIT
    assert consumer.ack_wait == 5.0
    assert consumer.filter_subject == config.subject
    assert consumer.max_ack_pending == 8

    await ensure(js, dataclasses.replace(config, ack_wait=12.0))
    assert (await js.consumer_info(config.stream, "imaging")).config.ack_wait == 12.0
    await ensure(js, dataclasses.replace(config, ack_wait=12.0))  # unchanged: still fine


async def test_replicas_ensuring_at_the_same_moment_make_one_stream_and_one_consumer(
    nats_server: NatsServer,
) -> None:
    tag = uuid.uuid4().hex[:10]
    config = dataclasses.replace(
        unique_config(nats_server.url), dlq_stream=f"DLQ_{tag}", dlq_subject=f"dlq{tag}.x"
    )
    connections = [await nats.connect(nats_server.url) for _ in range(6)]
    try:
        await asyncio.gather(*(ensure(nc.jetstream(), config) for nc in connections))
        js = connections[0].jetstream()
        names = {info.config.name for info in await js.streams_info()}
        assert {config.stream, config.dlq_stream} <= names
        assert [info.name for info in await js.consumers_info(config.stream)] == ["imaging"]
        assert [info.name for info in await js.consumers_info(config.dlq_stream)] == []
    finally:
        for nc in connections:
            await nc.close()


async def test_ensure_keeps_an_existing_stream_and_only_adds_what_is_missing(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    config = unique_config(nats_server.url)
    other = config.stream_subjects[0].replace(".>", "_other.>")
    await js.add_stream(
        StreamConfig(
            name=config.stream,
            subjects=[other],
            retention=RetentionPolicy.WORK_QUEUE,
            duplicate_window=60,
        )
    )
    await ensure(js, config)
    stream = (await js.stream_info(config.stream)).config
    assert stream.subjects == [other, *config.stream_subjects]
    assert stream.retention == RetentionPolicy.WORK_QUEUE
    assert stream.duplicate_window == 20 * 60


async def test_a_message_that_is_not_acked_is_redelivered_after_ack_wait(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    config = unique_config(nats_server.url, ack_wait=1.0)
    queue = await open_queue(config)
    try:
        await js.publish(config.subject, event_bytes())
        first = await fetch_one(queue)
        taken = time.monotonic()
        second = await fetch_one(queue)
        assert time.monotonic() - taken >= 0.9
        assert (first.attempt, second.attempt) == (1, 2)
        assert second.stream_seq == first.stream_seq
        await second.ack()
        await eventually(lambda: _ack_pending(js, config, 0), "ack recorded")
    finally:
        await queue.close()


async def test_heartbeats_keep_a_long_job_from_being_redelivered(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    config = unique_config(nats_server.url, ack_wait=1.0)
    jobs = Jobs()
    jobs.release = asyncio.Event()
    async with running(jobs.consumer(RetryPolicy(6, 1.0, 60.0), ack_wait=1.0), config):
        await js.publish(config.subject, event_bytes())
        await eventually(lambda: len(jobs.calls) == 1, "job started")
        other = await open_queue(config)
        try:
            # Three ack waits with the job still running: only heartbeats hold the message.
            assert await other.fetch(3.0) is None
        finally:
            await other.close()
        jobs.release.set()
        await eventually(lambda: _ack_pending(js, config, 0), "job acked")
    info = await js.consumer_info(config.stream, "imaging")
    assert info.num_redelivered == 0
    assert len(jobs.calls) == 1


async def test_transient_failures_back_off_then_give_up_and_term(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    config = unique_config(nats_server.url)
    jobs = Jobs(Outcome.RETRY, Outcome.RETRY, Outcome.RETRY)
    consumer = jobs.consumer(RetryPolicy(max_deliver=3, base=0.3, cap=1.0), config.ack_wait)
    async with running(consumer, config):
        await js.publish(config.subject, event_bytes())
        await eventually(lambda: jobs.gave_up != [], "GAVE_UP reported")
        await eventually(lambda: _ack_pending(js, config, 0), "message termed")
    times = [t for t, _ in jobs.calls]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.3 * 0.95  # nak(delay=base)
    assert times[2] - times[1] >= 0.6 * 0.95  # nak(delay=2*base)
    assert jobs.gave_up == ["gave up after 3 attempts: S3 down"]
    assert (consumer.processed, consumer.failed) == (0, 1)


async def test_a_failed_give_up_report_is_retried_on_a_later_delivery_without_rerunning(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    config = unique_config(nats_server.url)
    jobs = Jobs(Outcome.RETRY, Outcome.RETRY)
    jobs.give_up_errors.append(AccountsUnavailable("accounts down"))
    consumer = jobs.consumer(RetryPolicy(max_deliver=2, base=0.1, cap=0.2), config.ack_wait)
    async with running(consumer, config):
        await js.publish(config.subject, event_bytes())
        await eventually(lambda: jobs.gave_up != [], "GAVE_UP reported")
        await eventually(lambda: _ack_pending(js, config, 0), "message termed")
    assert len(jobs.calls) == 2, "the job ran again after its last attempt"
    assert jobs.gave_up == ["gave up after 2 attempts: S3 down"]


async def test_reported_failures_are_termed_and_successes_acked_at_once(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    config = unique_config(nats_server.url)
    jobs = Jobs(Outcome.FAILED, Outcome.DONE)
    consumer = jobs.consumer(RetryPolicy(6, 1.0, 60.0), config.ack_wait)
    async with running(consumer, config):
        await js.publish(config.subject, event_bytes())
        await js.publish(config.subject, event_bytes())
        await eventually(lambda: consumer.processed + consumer.failed == 2, "both settled")
        await eventually(lambda: _ack_pending(js, config, 0), "nothing left pending")
    assert (consumer.processed, consumer.failed) == (1, 1)
    info = await js.consumer_info(config.stream, "imaging")
    assert (info.num_redelivered, info.num_pending) == (0, 0)


async def test_an_undecodable_payload_is_termed_without_running_a_job(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    config = unique_config(nats_server.url)
    jobs = Jobs()
    consumer = jobs.consumer(RetryPolicy(6, 1.0, 60.0), config.ack_wait)
    async with running(consumer, config):
        await js.publish(config.subject, b"\xff\xfe not a ThumbnailRequested")
        await eventually(lambda: consumer.failed == 1, "payload termed")
        await eventually(lambda: _ack_pending(js, config, 0), "nothing left pending")
    assert jobs.calls == []


async def test_a_job_still_running_at_shutdown_is_handed_back_at_once(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    config = unique_config(nats_server.url)  # ack wait 30 s: only the nak brings it back soon
    jobs = Jobs()
    jobs.release = asyncio.Event()  # never set: the job outlives the grace period
    consumer = jobs.consumer(RetryPolicy(6, 1.0, 60.0), config.ack_wait)
    async with running(consumer, config):
        await js.publish(config.subject, event_bytes())
        await eventually(lambda: len(jobs.calls) == 1, "job started")
    other = await open_queue(config)
    try:
        handed_back = await fetch_one(other, seconds=5.0)
        assert handed_back.attempt == 2
        await handed_back.ack()
    finally:
        await other.close()


async def test_stats_report_the_consumer_and_the_counters(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    config = unique_config(nats_server.url)
    jobs = Jobs()
    jobs.release = asyncio.Event()
    consumer = jobs.consumer(RetryPolicy(6, 1.0, 60.0), config.ack_wait)
    async with running(consumer, config):
        for _ in range(4):
            await js.publish(config.subject, event_bytes())
        await eventually(lambda: len(jobs.calls) == 2, "two slots busy")
        stats = await consumer.stats()
        assert (stats.ack_pending, stats.pending, stats.processed) == (2, 2, 0)
        jobs.release.set()
        await eventually(lambda: consumer.processed == 4, "all processed")
        stats = await consumer.stats()
        assert (stats.ack_pending, stats.pending, stats.processed, stats.failed) == (0, 0, 4, 0)


async def test_the_fetch_loop_survives_a_nats_restart(own_nats: NatsServer) -> None:
    config = unique_config(own_nats.url)
    jobs = Jobs()
    consumer = jobs.consumer(RetryPolicy(6, 1.0, 60.0), config.ack_wait)
    publisher = await nats.connect(own_nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = publisher.jetstream()
    try:
        async with running(consumer, config):
            await js.publish(config.subject, event_bytes("before"))
            await eventually(lambda: consumer.processed == 1, "processed before the restart")
            own_nats.restart()
            await eventually(lambda: _published(js, config, event_bytes("after")), "published")
            await eventually(lambda: consumer.processed == 2, "processed after the restart")
    finally:
        await publisher.close()
    assert [e.user_id for _, e in jobs.calls] == ["before", "after"]


async def _published(js: JetStreamContext, config: QueueConfig, payload: bytes) -> bool:
    """Publishes once; False while the restarted server cannot confirm it yet."""
    try:
        await js.publish(config.subject, payload, timeout=1.0, headers={"Nats-Msg-Id": "after"})
    except (
        nats.errors.TimeoutError,
        nats.errors.NoRespondersError,
        nats.errors.ConnectionClosedError,
    ):
        return False
    return True


async def _ack_pending(js: JetStreamContext, config: QueueConfig, expected: int) -> bool:
    info = await js.consumer_info(config.stream, config.durable)
    return info.num_ack_pending == expected


async def test_a_job_past_its_time_is_cut_and_handed_back_for_a_retry(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    """A job that hangs is leased (heartbeats) only until its bound, then retried with back-off."""
    config = unique_config(nats_server.url, ack_wait=1.0)
    metrics = Metrics()
    started: list[float] = []

    async def never_done(event: ThumbnailRequested) -> Result:
        started.append(time.monotonic())
        await asyncio.Event().wait()
        return Result(Outcome.DONE)

    async def no_give_up(event: ThumbnailRequested, reason: str) -> None:
        raise AssertionError(f"gave up: {reason}")

    bound, back_off = 2.5, 0.5
    consumer = Consumer(
        never_done, no_give_up, RetryPolicy(max_deliver=3, base=back_off, cap=4.0), slots=1,
        ack_wait=config.ack_wait, max_job_seconds=bound, jitter=lambda: 1.0, metrics=metrics,
    )  # fmt: skip
    async with running(consumer, config):
        await js.publish(config.subject, event_bytes())
        await eventually(lambda: len(started) >= 2, "the job tried again")
        retried = metrics.registry.get_sample_value(
            "imaging_jobs_retried_total", {"reason": "JobTimeout"}
        )
    # Not redelivered at the 1 s ack wait (leased while it ran), nor before its bound, and then
    # after the back-off (a nak with delay, not a term: it came back at all).
    assert started[1] - started[0] >= bound + back_off - 0.1, started
    assert retried == 1
