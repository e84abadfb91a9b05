"""Composition root: settings in, pool, clients, server and queue opened and closed in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from imaging.v1 import imaging_pb2, imaging_pb2_grpc

from grpc_guard.allocator import bound_the_heap
from grpc_guard.auth import InternalTokenInterceptor
from grpc_guard.options import server_options
from grpc_guard.server import SMALL_REQUEST_BYTES, Cap, Guard
from grpc_guard.server import Limits as GuardLimits
from grpc_telemetry.endpoint import add_process_collectors
from grpc_telemetry.endpoint import serve as serve_endpoint
from grpc_telemetry.server import RpcTelemetry
from grpc_telemetry.tracing import setup as setup_tracing
from imaging_service import bus, logs, metrics, tls
from imaging_service.accounts_client import AccountsClient
from imaging_service.consumer import Consumer, RetryPolicy
from imaging_service.errors import StorageUnavailable
from imaging_service.handler import Handler
from imaging_service.pool import RenderBudget, RenderPool
from imaging_service.render import Limits
from imaging_service.servicer import INTERNAL_METHODS, ImagingServicer, Previews
from imaging_service.settings import MAX_MESSAGE_BYTES, Settings, SettingsError, from_env
from imaging_service.storage import Storage

log = logging.getLogger("imaging_service")
SERVICE_NAME = imaging_pb2.DESCRIPTOR.services_by_name["ImagingService"].full_name
QUEUE_POLL_SECONDS = 5.0  # the queue and dead-letter gauges
# A job's time beyond its render: the original from S3, the wait for a render process (behind
# at most 2 x RENDER_PROCESSES previews), three uploads, two accounts calls of 10 s at most.
JOB_MARGIN_SECONDS = 60.0
T = TypeVar("T")


def queue_config(settings: Settings) -> bus.QueueConfig:
    return bus.QueueConfig(
        url=settings.nats_url,
        stream=settings.stream,
        stream_subjects=settings.stream_subjects,
        subject=settings.subject,
        replay_subject=settings.replay_subject,
        durable=settings.durable,
        ack_wait=settings.ack_wait_seconds,
        max_ack_pending=4 * settings.render_processes,
        auth=settings.nats_auth,
    )


def guard_limits(settings: Settings) -> GuardLimits:
    render = frozenset({f"/{SERVICE_NAME}/RenderThumbnails"})
    return GuardLimits(
        max_concurrent_rpcs=settings.max_concurrent_rpcs,
        max_request_bytes=settings.max_request_bytes_in_flight,
        caps=(Cap("image uploads", render, settings.max_concurrent_uploads, bodies=True),),
        max_body_bytes=settings.max_avatar_bytes + SMALL_REQUEST_BYTES,
        max_receiving=settings.max_requests_receiving,
        retry_after_seconds=settings.retry_after_seconds,
    )


async def start_server(
    port: int,
    servicer: ImagingServicer,
    health_servicer: health.aio.HealthServicer,
    credentials: grpc.ServerCredentials | None = None,  # None: plaintext
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    options: Sequence[tuple[str, int]] = (
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ),
) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(interceptors=interceptors, options=options)
    imaging_pb2_grpc.add_ImagingServiceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"[::]:{port}"
    if credentials is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, credentials)
    await server.start()
    return server, bound


async def set_health(servicer: health.aio.HealthServicer, status: int) -> None:
    for name in ("", SERVICE_NAME):
        await servicer.set(name, status)


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
    NOT_SERVING, no more fetching, in-flight jobs finished or handed back, RPCs finished,
    NATS drained, render processes stopped."""
    if stop is None:
        stop = stop_on_signals()
    grace = settings.shutdown_grace_seconds
    limits = Limits(
        max_bytes=settings.max_avatar_bytes,
        max_pixels=settings.max_pixels,
        max_segments=settings.max_segments,
        max_metadata_bytes=settings.max_metadata_bytes,
        max_scans=settings.max_scans,
        max_frames=settings.max_frames,
        max_blocks=settings.max_blocks,
    )
    observed = metrics.Metrics()
    add_process_collectors(observed.registry)
    traces = setup_tracing(settings.otlp_endpoint, "imaging_service")
    async with AsyncExitStack() as stack:
        stack.push_async_callback(traces.shutdown)
        endpoint = serve_endpoint(
            settings.metrics_port, observed.registry, "IMAGING_METRICS_PORT", SettingsError
        )
        if endpoint is not None:
            stack.callback(endpoint.stop)
        pool = RenderPool(
            settings.render_processes,
            limits,
            max_tasks_per_child=settings.render_max_tasks_per_child,
            max_megapixels_in_flight=settings.render_max_megapixels_in_flight,
            budget=RenderBudget(
                settings.render_budget_floor_seconds, settings.render_budget_seconds_per_megapixel
            ),
        )
        stack.push_async_callback(pool.close)
        observed.megapixels_in_flight.set_function(lambda: pool.megapixels_in_flight)
        previews = Previews(pool, settings.render_thumbnails_max_in_flight)
        observed.previews_in_flight.set_function(lambda: previews.in_flight)
        accounts = await stack.enter_async_context(
            AccountsClient(
                settings.accounts_addr,
                settings.internal_token,
                credentials=tls.accounts_credentials(settings),
                tracer=traces.tracer,
            )
        )
        storage = Storage.connect(
            settings.s3_endpoint,
            settings.s3_access_key,
            settings.s3_secret_key,
            settings.s3_bucket,
            settings.s3_secure,
            settings.s3_region,
            ca_file=settings.s3_ca_file,
        )
        handler = Handler(storage, pool, accounts, limits, observed, traces.tracer)
        policy = RetryPolicy(
            settings.max_deliver, settings.retry_base_seconds, settings.retry_max_seconds
        )
        consumer = Consumer(
            handler.handle,
            handler.give_up,
            policy,
            slots=settings.render_processes,
            ack_wait=settings.ack_wait_seconds,
            max_job_seconds=pool.budget.seconds(settings.max_pixels / 1e6) + JOB_MARGIN_SECONDS,
            metrics=observed,
            tracer=traces.tracer,
        )
        health_servicer = health.aio.HealthServicer()
        await set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
        servicer = ImagingServicer(previews, consumer.stats, consumer.replay)
        server, port = await start_server(
            settings.port,
            servicer,
            health_servicer,
            tls.server_credentials(settings),
            [
                *Guard(guard_limits(settings)).around(RpcTelemetry(observed.rpc, traces.tracer)),
                InternalTokenInterceptor(settings.internal_token, INTERNAL_METHODS),
            ],
            server_options(
                max_message_bytes=MAX_MESSAGE_BYTES,
                max_streams_per_connection=settings.max_streams_per_connection,
                keepalive_seconds=settings.keepalive_seconds,
                keepalive_timeout_seconds=settings.keepalive_timeout_seconds,
            ),
        )
        stack.push_async_callback(server.stop, grace)
        log.info("listening", extra={"port": port, "settings": repr(settings)})

        queue = await unless_stopped(stop, open_dependencies(settings, storage))
        if queue is None:
            await health_servicer.enter_graceful_shutdown()
            log.info("stopped before the dependencies were up")
            return
        stack.push_async_callback(queue.close)
        await set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving")
        worker = asyncio.create_task(consumer.run(queue, stop))
        gauges = asyncio.create_task(
            metrics.poll_queue(consumer.stats, observed, stop, QUEUE_POLL_SECONDS)
        )
        stopping = asyncio.create_task(stop.wait())
        # The worker only ends before ``stop`` on a bug; ``await worker`` below re-raises it.
        await asyncio.wait({worker, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()

        log.info("shutting down", extra={"grace_s": grace})
        await health_servicer.enter_graceful_shutdown()
        stop.set()
        await asyncio.gather(drain_jobs(worker, consumer, grace), server.stop(grace), gauges)
    log.info("stopped")


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
    logs.configure(settings.log_level, settings.secrets())
    bound_the_heap()  # before any thread starts: see grpc_guard.allocator
    try:
        asyncio.run(serve(settings))
    except SettingsError as exc:  # a port taken or a TLS file unreadable, found at start
        sys.stderr.write(f"imaging_service: configuration error: {exc}\n")
        sys.exit(2)
