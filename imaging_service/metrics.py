"""Prometheus metrics of the imaging service, the render-process counter and the queue poller.

Every metric lives in the registry of one `Metrics` object that main.py makes and passes in; a
component built without one records into a private registry that nobody scrapes. The HTTP
endpoint that serves the registry, and the process collectors, are grpc_telemetry.endpoint's.
Nothing here runs inside a render process: the handler times renders around the pool call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from grpc_telemetry.server import RpcMetrics
from imaging_service.bus import QueueStats
from imaging_service.errors import QueueUnavailable

log = logging.getLogger(__name__)

STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
STAGES = ("queue_wait", "fetch", "render", "upload", "callback")
# Upper bounds (decoded megapixels, from the header) of the classes render time is kept by.
SOURCE_CLASSES = ((0.5, "0-0.5"), (2.0, "0.5-2"), (8.0, "2-8"), (24.0, "8-24"))
LARGEST_CLASS = "24+"


def source_class(megapixels: float) -> str:
    """The label of a source image's size class: 0-0.5, 0.5-2, 2-8, 8-24 or 24+ megapixels."""
    return next((label for bound, label in SOURCE_CLASSES if megapixels <= bound), LARGEST_CLASS)


def seconds_since(moment: datetime, now: datetime | None = None) -> float:
    """Seconds from `moment` (aware) to `now`; 0 when clocks disagree and it is negative."""
    elapsed = ((now or datetime.now(UTC)) - moment).total_seconds()
    return max(elapsed, 0.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.rpc = RpcMetrics(r)
        self.jobs_processed = Counter(
            "imaging_jobs_processed_total",
            "Thumbnail requests acked: rendered and reported, skipped (stale generation or "
            "already READY), or user_gone.",
            ("result",),
            registry=r,
        )
        self.jobs_failed = Counter(
            "imaging_jobs_failed_total",
            "Thumbnail requests ended for good, by failure code (GAVE_UP after the retries).",
            ("reason",),
            registry=r,
        )
        self.jobs_retried = Counter(
            "imaging_jobs_retried_total",
            "Thumbnail requests handed back for a retry, by the transient error's class.",
            ("reason",),
            registry=r,
        )
        self.stage_seconds = Histogram(
            "imaging_job_stage_seconds",
            "Time-to-thumbnail stages in the worker: queue_wait (stored in JetStream to "
            "fetched), fetch (original from S3), render, upload (PNGs written, and read back "
            "where the store's answer does not prove them), callback (UpdateThumbnails). Only "
            "stages that completed.",
            ("stage",),
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.render_seconds = Histogram(
            "imaging_render_seconds",
            "Renders of the three thumbnails of one avatar, including the wait for a render "
            "process, by the source's decoded megapixels.",
            ("source_megapixels",),
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.dead_letters = Counter(
            "imaging_dead_letters_total",
            "Requests copied to the dead-letter stream by this process.",
            registry=r,
        )
        self.dead_letter_messages = Gauge(
            "imaging_dead_letter_messages",
            "Messages in the dead-letter stream (polled).",
            registry=r,
        )
        self.queue_pending = Gauge(
            "imaging_queue_pending_messages",
            "Messages of the imaging consumer not delivered yet (polled).",
            registry=r,
        )
        self.queue_ack_pending = Gauge(
            "imaging_queue_ack_pending_messages",
            "Messages of the imaging consumer delivered and not acked yet (polled).",
            registry=r,
        )
        self.render_processes_replaced = Counter(
            "imaging_render_process_replacements_total",
            "Render processes started in place of one that was recycled or died.",
            registry=r,
        )
        self.megapixels_in_flight = Gauge(
            "imaging_render_megapixels_in_flight",
            "Decoded megapixels of the renders admitted and not finished.",
            registry=r,
        )
        self.previews_in_flight = Gauge(
            "imaging_previews_in_flight",
            "RenderThumbnails renders running or waiting for a render process; past "
            "RENDER_THUMBNAILS_MAX_IN_FLIGHT a call gets RESOURCE_EXHAUSTED.",
            registry=r,
        )


class RenderProcesses:
    """Counts render processes replaced, from the process ids the pool shows each time it is
    looked at (after every render of a job). The first `processes` ids seen are the pool
    filling up; every new one after those replaced a process that was recycled or died."""

    def __init__(
        self, pids: Callable[[], Iterable[int]], processes: int, replaced: Counter
    ) -> None:
        self._pids = pids
        self._processes = processes
        self._replaced = replaced
        self._seen: set[int] = set()
        self._started = 0

    def look(self) -> None:
        current = set(self._pids())
        new = len(current - self._seen)
        self._seen = current
        initial = max(0, min(new, self._processes - self._started))
        self._started += new
        if new > initial:
            self._replaced.inc(new - initial)


async def poll_queue(
    read: Callable[[], Awaitable[QueueStats]], metrics: Metrics, stop: asyncio.Event, every: float
) -> None:
    """Sets the queue gauges every `every` seconds until `stop`; an outage skips a round."""
    while not stop.is_set():
        try:
            stats = await read()
        except QueueUnavailable as exc:  # the gauges keep their last value
            log.debug("queue levels not read", extra={"error": str(exc)})
        else:
            metrics.queue_pending.set(stats.pending)
            metrics.queue_ack_pending.set(stats.ack_pending)
            metrics.dead_letter_messages.set(stats.dead_lettered)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
