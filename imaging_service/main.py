"""Composition root: settings in, pool, clients, server and queue opened and closed in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from typing import Any, TypeVar

from opentelemetry import trace

from grpc_guard.allocator import bound_the_heap
from grpc_telemetry.endpoint import add_process_collectors
from grpc_telemetry.endpoint import serve as serve_endpoint
from grpc_telemetry.tracing import enabled as tracing_enabled
from grpc_telemetry.tracing import setup as setup_tracing
from imaging_service import bus, metrics, tls
from imaging_service.accounts_client import AccountsClient
from imaging_service.budgets import RenderBudget
from imaging_service.consumer import Consumer
from imaging_service.decision import RetryPolicy
from imaging_service.errors import StorageUnavailable
from imaging_service.handler import Handler
from imaging_service.pool import RenderPool
from imaging_service.render import Limits
from imaging_service.server import Listening, listen
from imaging_service.servicer import ImagingServicer, Previews
from imaging_service.settings import Settings, SettingsError, from_env
from imaging_service.storage import Storage
from imaging_service.streams import QueueConfig
from service_logs import json_lines

log = logging.getLogger("imaging_service")
QUEUE_POLL_SECONDS = 5.0  # the queue and dead-letter gauges
# A job's time beyond its render: the original from S3, the wait for a render process (behind
# at most 2 x RENDER_PROCESSES previews), three uploads, two accounts calls of 10 s at most.
JOB_MARGIN_SECONDS = 60.0
T = TypeVar("T")


def queue_config(settings: Settings) -> QueueConfig:
    return QueueConfig(
        url=settings.nats_url,
        stream=settings.stream,
        stream_subjects=settings.stream_subjects,
        subject=settings.subject,
        replay_subject=settings.replay_subject,
        durable=settings.durable,
        ack_wait=settings.ack_wait_seconds,
        max_ack_pending=settings.max_ack_pending,
        replicas=settings.stream_replicas,
        auth=settings.nats_auth,
    )


async def wait_for_storage(storage: Storage) -> None:
    delay = 0.5
    while True:
        try:
            await storage.check()
            return
        except StorageUnavailable as exc:
            log.warning("waiting for S3", extra={"error": str(exc), "retry_in": delay})
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)


async def open_dependencies(settings: Settings, storage: Storage) -> bus.JobQueue:
    queue = await bus.open_queue(queue_config(settings))
    try:
        await wait_for_storage(storage)
    except BaseException:
        await queue.close()
        raise
    return queue


async def unless_stopped(stop: asyncio.Event, work: Coroutine[Any, Any, T]) -> T | None:
    """The result of ``work``, or None if ``stop`` was set first (``work`` is then cancelled)."""
    task = asyncio.create_task(work)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Runs until SIGTERM/SIGINT (or ``stop``), then shuts down within the grace period:
    NOT_SERVING, no more fetching, in-flight jobs finished or handed back while the RPCs finish,
    NATS drained, render processes stopped. Each resource is closed once, by the exit stack."""
    if stop is None:
        stop = stop_on_signals()
    observed = metrics.Metrics()
    add_process_collectors(observed.registry)
    async with AsyncExitStack() as stack:
        stack.callback(log.info, "stopped")
        traces = setup_tracing(settings.otlp_endpoint, "imaging_service", os.environ, SettingsError)
        stack.push_async_callback(traces.shutdown)
        endpoint = serve_endpoint(
            settings.metrics_port, observed.registry, "IMAGING_METRICS_PORT", SettingsError
        )
        if endpoint is not None:
            stack.callback(endpoint.stop)
        pool = render_pool(settings, observed)
        stack.push_async_callback(pool.close)
        accounts = await stack.enter_async_context(accounts_client(settings, traces.tracer))
        storage = open_storage(settings)
        handler = Handler(storage, pool, accounts, limits(settings), observed, traces.tracer)
        consumer = build_consumer(settings, handler, pool, observed, traces.tracer)
        servicer = imaging_servicer(settings, pool, consumer, observed)
        listening = await listen(settings, servicer, observed.rpc, traces.tracer)
        stack.push_async_callback(listening.stop)
        queue = await unless_stopped(stop, open_dependencies(settings, storage))
        if queue is None:
            log.info("stopped before the dependencies were up")
            return
        stack.push_async_callback(queue.close)
        await work(consumer, queue, listening, observed, stop, settings.shutdown_grace_seconds)


def limits(settings: Settings) -> Limits:
    return Limits(
        max_bytes=settings.max_avatar_bytes,
        max_pixels=settings.max_pixels,
        max_segments=settings.max_segments,
        max_metadata_bytes=settings.max_metadata_bytes,
        max_scans=settings.max_scans,
        max_frames=settings.max_frames,
        max_blocks=settings.max_blocks,
    )


def render_pool(settings: Settings, observed: metrics.Metrics) -> RenderPool:
    pool = RenderPool(
        settings.render_processes,
        limits(settings),
        max_tasks_per_child=settings.render_max_tasks_per_child,
        max_megapixels_in_flight=settings.render_max_megapixels_in_flight,
        budget=RenderBudget(
            settings.render_budget_floor_seconds, settings.render_budget_seconds_per_megapixel
        ),
    )
    observed.megapixels_in_flight.set_function(lambda: pool.megapixels_in_flight)
    return pool


def accounts_client(settings: Settings, tracer: trace.Tracer | None) -> AccountsClient:
    credentials = tls.accounts_credentials(settings)
    return AccountsClient(
        settings.accounts_addr, settings.internal_token, credentials=credentials, tracer=tracer
    )


def open_storage(settings: Settings) -> Storage:
    return Storage.connect(
        settings.s3_endpoint,
        settings.s3_access_key,
        settings.s3_secret_key,
        settings.s3_bucket,
        settings.s3_secure,
        settings.s3_region,
        ca_file=settings.s3_ca_file,
        auth=settings.s3_auth,
    )


def build_consumer(
    settings: Settings,
    handler: Handler,
    pool: RenderPool,
    observed: metrics.Metrics,
    tracer: trace.Tracer | None,
) -> Consumer:
    policy = RetryPolicy(
        settings.max_deliver, settings.retry_base_seconds, settings.retry_max_seconds
    )
    return Consumer(
        handler.handle,
        handler.give_up,
        policy,
        slots=settings.render_processes,
        ack_wait=settings.ack_wait_seconds,
        max_job_seconds=pool.budget.seconds(settings.max_pixels / 1e6) + JOB_MARGIN_SECONDS,
        metrics=observed,
        tracer=tracer,
    )


def imaging_servicer(
    settings: Settings, pool: RenderPool, consumer: Consumer, observed: metrics.Metrics
) -> ImagingServicer:
    previews = Previews(pool, settings.render_thumbnails_max_in_flight)
    observed.previews_in_flight.set_function(lambda: previews.in_flight)
    return ImagingServicer(previews, consumer.stats, consumer.replay)


async def work(
    consumer: Consumer,
    queue: bus.JobQueue,
    listening: Listening,
    observed: metrics.Metrics,
    stop: asyncio.Event,
    grace: float,
) -> None:
    """SERVING and fetching until ``stop``; then the server stops while the running jobs finish
    or are handed back, both within ``grace``. Re-raises if the worker loop failed."""
    await listening.serving()
    log.info("serving")
    worker = asyncio.create_task(consumer.run(queue, stop))
    gauges = asyncio.create_task(
        metrics.poll_queue(consumer.stats, observed, stop, QUEUE_POLL_SECONDS)
    )
    stopping = asyncio.create_task(stop.wait())
    # The worker only ends before ``stop`` on a bug; drain_jobs re-raises it.
    await asyncio.wait({worker, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    log.info("shutting down", extra={"grace_s": grace})
    stop.set()
    await asyncio.gather(listening.stop(), drain_jobs(worker, consumer, grace), gauges)


async def drain_jobs(worker: asyncio.Task[None], consumer: Consumer, grace: float) -> None:
    """Stops fetching, then lets running jobs finish within what is left of ``grace``."""
    deadline = asyncio.get_running_loop().time() + grace
    try:
        await worker  # returns within one fetch timeout; re-raises if the loop crashed
    finally:
        await consumer.finish(max(0.0, deadline - asyncio.get_running_loop().time()))


def stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def main() -> None:
    try:
        settings = from_env(os.environ)
    except SettingsError as exc:
        sys.stderr.write(f"imaging_service: configuration error: {exc}\n")
        sys.exit(2)
    traced = tracing_enabled(settings.otlp_endpoint, os.environ)
    json_lines.configure(settings.log_level, settings.secrets(), trace_ids=traced)
    bound_the_heap()  # before any thread starts: see grpc_guard.allocator
    try:
        asyncio.run(serve(settings))
    except SettingsError as exc:  # a port taken, a TLS file unreadable, a propagator missing
        sys.stderr.write(f"imaging_service: configuration error: {exc}\n")
        sys.exit(2)
