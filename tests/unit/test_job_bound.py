"""A job is leased for a bounded time: one that hangs is cut and retried, never kept forever."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from accounts.v1.events_pb2 import ThumbnailRequested

from imaging_service.consumer import Consumer, RetryPolicy
from imaging_service.handler import Outcome, Result
from imaging_service.metrics import Metrics


class HeldDelivery:
    """One delivery of a thumbnail request, as bus.Delivery shows it; notes what it is told."""

    def __init__(self) -> None:
        event = ThumbnailRequested(
            event_id="e1", user_id="u1", avatar_object="avatars/u1/1/original", avatar_generation=1
        )
        self.data = event.SerializeToString()
        self.subject = "accounts.thumbnail.requested"
        self.attempt = 1
        self.stream_seq = 7
        self.stored_at = datetime.now(UTC)
        self.headers: dict[str, str] = {}
        self.settled: list[tuple[str, float | None]] = []
        self.heartbeats = 0

    async def ack(self) -> None:
        self.settled.append(("ack", None))

    async def term(self) -> None:
        self.settled.append(("term", None))

    async def nak(self, delay: float | None = None) -> None:
        self.settled.append(("nak", delay))

    async def in_progress(self) -> None:
        self.heartbeats += 1


class OneJob:
    """A queue that hands out one delivery, then has nothing."""

    def __init__(self, delivery: HeldDelivery) -> None:
        self._delivery: HeldDelivery | None = delivery

    async def fetch(self, wait_seconds: float) -> HeldDelivery | None:
        delivery, self._delivery = self._delivery, None
        if delivery is None:
            await asyncio.sleep(wait_seconds)  # as a fetch waits for a message
        return delivery


async def until(condition: Callable[[], bool], what: str, deadline: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        if loop.time() > end:
            pytest.fail(f"gave up waiting until {what}")
        await asyncio.sleep(0.005)  # poll until the deadline


async def never_done(event: ThumbnailRequested) -> Result:
    await asyncio.Event().wait()
    return Result(Outcome.DONE)


async def no_give_up(event: ThumbnailRequested, reason: str) -> None:
    raise AssertionError(f"gave up: {reason}")


async def test_a_job_past_its_time_is_cut_and_handed_back_for_a_retry() -> None:
    metrics = Metrics()
    consumer = Consumer(
        never_done, no_give_up, RetryPolicy(max_deliver=3, base=0.5, cap=4.0), slots=1,
        ack_wait=0.03, max_job_seconds=0.3, jitter=lambda: 1.0, metrics=metrics,
    )  # fmt: skip
    delivery = HeldDelivery()
    queue: Any = OneJob(delivery)
    stop = asyncio.Event()
    worker = asyncio.create_task(consumer.run(queue, stop))
    try:
        await until(lambda: bool(delivery.settled), "the job is settled")
    finally:
        stop.set()
        await worker
        await consumer.finish(1.0)
    assert delivery.settled == [("nak", 0.5)]  # RETRY: back-off, not a term
    assert delivery.heartbeats > 0  # leased while it ran
    retried = metrics.registry.get_sample_value(
        "imaging_jobs_retried_total", {"reason": "JobTimeout"}
    )
    assert retried == 1
