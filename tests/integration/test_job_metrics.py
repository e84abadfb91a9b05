"""The worker's job metrics, counted where the consumer settles each message (real nats-server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest
from accounts.v1.events_pb2 import ThumbnailRequested
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry

from devstack.nats import NatsServer
from imaging_service.consumer import Consumer
from imaging_service.decision import Outcome, Result, RetryPolicy
from imaging_service.metrics import Metrics, poll_queue
from tests.integration.test_imaging_bus import event_bytes, eventually, running, unique_config


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_server.url)
    yield nc.jetstream()
    await nc.close()


class Script:
    """The handler side: each user id has its list of results, in order."""

    def __init__(self, results: dict[str, list[Result]]) -> None:
        self.results = results
        self.gave_up: list[str] = []

    async def handle(self, event: ThumbnailRequested) -> Result:
        return self.results[event.user_id].pop(0)

    async def give_up(self, event: ThumbnailRequested, reason: str) -> None:
        self.gave_up.append(event.user_id)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_jobs_are_counted_by_result_failure_code_and_retry_reason(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    config = unique_config(nats_server.url)
    metrics = Metrics(CollectorRegistry())
    retry = Result(Outcome.RETRY, "S3 down", reason="StorageUnavailable")
    script = Script(
        {
            "rendered": [retry, Result(Outcome.DONE, reason="rendered")],
            "truncated": [Result(Outcome.FAILED, "TRUNCATED: cut", reason="TRUNCATED")],
            "exhausted": [retry, retry],
        }
    )
    consumer = Consumer(
        script.handle, script.give_up, RetryPolicy(max_deliver=2, base=0.05, cap=0.1),
        slots=3, ack_wait=config.ack_wait, jitter=lambda: 1.0, metrics=metrics,
    )  # fmt: skip
    async with running(consumer, config):
        for user_id in script.results:
            await js.publish(config.subject, event_bytes(user_id))
        await js.publish(config.subject, b"\xff not an event")
        await eventually(lambda: consumer.processed + consumer.failed == 4, "all settled")

    assert value(metrics, "imaging_jobs_processed_total", result="rendered") == 1
    assert value(metrics, "imaging_jobs_failed_total", reason="TRUNCATED") == 1
    assert value(metrics, "imaging_jobs_failed_total", reason="GAVE_UP") == 1
    assert value(metrics, "imaging_jobs_failed_total", reason="UNDECODABLE") == 1
    assert value(metrics, "imaging_jobs_retried_total", reason="StorageUnavailable") == 2
    assert value(metrics, "imaging_dead_letters_total") == 1
    assert script.gave_up == ["exhausted"]
    deliveries = value(metrics, "imaging_job_stage_seconds_count", stage="queue_wait")
    assert deliveries == 6  # 2 + 1 + 2 + 1 (the undecodable one)


async def test_the_queue_gauges_follow_the_consumer(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    config = unique_config(nats_server.url)
    metrics = Metrics(CollectorRegistry())
    release = asyncio.Event()

    async def handle(event: ThumbnailRequested) -> Result:
        await release.wait()
        return Result(Outcome.DONE, reason="rendered")

    async def give_up(event: ThumbnailRequested, reason: str) -> None:
        raise AssertionError(reason)

    consumer = Consumer(handle, give_up, RetryPolicy(6, 1.0, 60.0), slots=1, ack_wait=30.0)
    stop = asyncio.Event()
    async with running(consumer, config):
        gauges = asyncio.create_task(poll_queue(consumer.stats, metrics, stop, every=0.05))
        for _ in range(3):
            await js.publish(config.subject, event_bytes())
        await eventually(
            lambda: (
                (
                    value(metrics, "imaging_queue_ack_pending_messages"),
                    value(metrics, "imaging_queue_pending_messages"),
                )
                == (1, 2)
            ),
            "one job running, two waiting",
        )
        assert metrics.registry.get_sample_value("imaging_dead_letter_messages") is not None
        release.set()
        await eventually(
            lambda: value(metrics, "imaging_queue_ack_pending_messages") == 0, "all acked"
        )
        stop.set()
        await gauges
