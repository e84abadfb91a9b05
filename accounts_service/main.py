"""Composition root: settings in; adapters, use cases, background loops and the gRPC server
built, each entered once into one AsyncExitStack, and closed in the reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from grpc_health.v1 import health, health_pb2
from opentelemetry import trace

from accounts_service import metrics
from accounts_service.adapters import db
from accounts_service.adapters.bus import Bus
from accounts_service.adapters.changes import ChangeHub
from accounts_service.adapters.storage import Storage
from accounts_service.api.server import build_server, serving, set_health
from accounts_service.api.servicer import AccountsServicer
from accounts_service.background.cleaner import StorageCleaner
from accounts_service.background.pruner import Pruner, Retention
from accounts_service.background.reconciler import Reconciler
from accounts_service.background.relay import OutboxRelay
from accounts_service.errors import AccountsError
from accounts_service.intake import UPLOAD_TTL, AvatarIntake
from accounts_service.ratelimit import TokenBucket
from accounts_service.settings import Settings, SettingsError, from_env
from accounts_service.users import Users
from accounts_service.watch import Watcher
from grpc_guard.allocator import bound_the_heap
from grpc_telemetry.endpoint import add_process_collectors
from grpc_telemetry.endpoint import serve as serve_endpoint
from grpc_telemetry.server import RpcTelemetry
from grpc_telemetry.tracing import enabled as tracing_enabled
from grpc_telemetry.tracing import setup as setup_tracing
from image_policy.prescan import ScanLimits
from service_logs import json_lines

log = logging.getLogger("accounts_service")
Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def build_pool(settings: Settings) -> db.Pool:
    return db.new_pool(
        settings.database_url,
        settings.db_pool_size,
        settings.db_pool_max_waiting,
        settings.db_pool_timeout_seconds,
        name="accounts",
    )


def build_users(
    settings: Settings,
    pool: db.Pool,
    storage: Storage,
    cleaner: StorageCleaner,
    observed: metrics.Metrics,
) -> Users:
    limits = ScanLimits(
        settings.max_avatar_bytes,
        settings.max_pixels,
        max_segments=settings.max_segments,
        max_metadata_bytes=settings.max_metadata_bytes,
        max_scans=settings.max_scans,
        max_frames=settings.max_frames,
        max_blocks=settings.max_blocks,
    )
    uploads = TokenBucket(settings.uploads_per_second, settings.upload_burst)
    page_key = hashlib.sha256(b"page-token\0" + settings.internal_token.encode()).digest()
    return Users(
        pool,
        AvatarIntake(pool, storage, limits, uploads),
        page_key,
        cleaner.wake,
        settings.old_generation_grace_seconds,
        observed,
    )


def build_loops(
    settings: Settings,
    pool: db.Pool,
    bus: Bus,
    hub: ChangeHub,
    cleaner: StorageCleaner,
    observed: metrics.Metrics,
    tracer: trace.Tracer | None,
) -> list[Loop]:
    """The background loops, started once PostgreSQL and S3 answer."""
    relay = OutboxRelay(
        pool,
        bus,
        settings.database_url,
        settings.relay_poll_seconds,
        metrics=observed,
        tracer=tracer,
    )
    reconciler = Reconciler(
        pool, settings.reconcile_after_seconds, settings.reconcile_every_seconds
    )
    retention = Retention(
        published_events=settings.outbox_retention_seconds,
        request_ids=settings.request_id_retention_seconds,
        unused_uploads=UPLOAD_TTL.total_seconds(),  # their objects go by then
    )
    pruner = Pruner(pool, retention, settings.prune_every_seconds)
    return [relay.run, pruner.run, reconciler.run, hub.run, cleaner.run]


async def retry_until(
    stop: asyncio.Event, what: str, attempt: Callable[[], Awaitable[object]]
) -> bool:
    """Calls `attempt` until it succeeds (True) or `stop` is set (False), backing off to 5 s."""
    delay = 0.2
    while not stop.is_set():
        try:
            await attempt()
            return True
        except AccountsError as exc:
            log.warning("waiting for dependency", extra={"dependency": what, "error": str(exc)})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, 5.0)
    return False


async def dependencies_ready(stop: asyncio.Event, pool: db.Pool, storage: Storage) -> bool:
    """PostgreSQL answers, the migrations are applied and the bucket exists (False: stopped)."""
    return (
        await retry_until(stop, "postgresql", lambda: pool.wait_ready(5.0))
        and await retry_until(stop, "migrations", lambda: db.migrate(pool))
        and await retry_until(stop, "s3", storage.check)
    )


@contextlib.asynccontextmanager
async def running(stop: asyncio.Event) -> AsyncIterator[list[asyncio.Task[None]]]:
    """A list for the background loops' tasks; on exit `stop` is set and each one awaited."""
    tasks: list[asyncio.Task[None]] = []
    try:
        yield tasks
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    servicer_factory: Callable[[Users, Watcher, Storage], AccountsServicer] = AccountsServicer,
) -> None:
    """Runs until `stop` is set, then shuts down within the grace period: RPCs, then the loops,
    NATS, PostgreSQL, the metrics endpoint and tracing, in that order."""
    observed = metrics.Metrics()
    add_process_collectors(observed.registry)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(log.info, "stopped")
        traces = setup_tracing(
            settings.otlp_endpoint, "accounts_service", os.environ, SettingsError
        )
        stack.push_async_callback(traces.shutdown)
        endpoint = serve_endpoint(
            settings.metrics_port, observed.registry, "ACCOUNTS_METRICS_PORT", SettingsError
        )  # a taken port stops us here
        if endpoint is not None:
            stack.callback(endpoint.stop)
        pool = await stack.enter_async_context(build_pool(settings))
        bus = Bus(settings.nats_url, auth=settings.nats_auth)
        stack.push_async_callback(bus.close)
        storage, hub = Storage(settings), ChangeHub(settings.database_url)
        cleaner = StorageCleaner(pool, storage, settings.cleanup_every_seconds)
        users = build_users(settings, pool, storage, cleaner, observed)
        # Half the pool at most for WatchUser reads: a mass wake-up leaves room for other calls.
        watcher = Watcher(pool, hub, max(1, settings.db_pool_size // 2))
        health_servicer = health.aio.HealthServicer()
        await set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
        servicer = servicer_factory(users, watcher, storage)
        telemetry = RpcTelemetry(observed.rpc, traces.tracer)
        server = build_server(settings, telemetry, servicer, health_servicer)
        loops = await stack.enter_async_context(running(stop))
        await stack.enter_async_context(serving(server, settings, health_servicer, stop, hub.close))
        if await dependencies_ready(stop, pool, storage):
            runs = build_loops(settings, pool, bus, hub, cleaner, observed, traces.tracer)
            loops += [asyncio.create_task(run(stop)) for run in runs]
            await set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING)
            log.info("serving")
        await stop.wait()


async def run(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop)


def main() -> None:
    try:
        settings = from_env(os.environ)
    except SettingsError as exc:
        print(f"accounts_service: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    traced = tracing_enabled(settings.otlp_endpoint, os.environ)
    json_lines.configure(settings.log_level, settings.secrets(), trace_ids=traced)
    bound_the_heap()  # before any thread starts: see grpc_guard.allocator
    try:
        asyncio.run(run(settings))
    except SettingsError as exc:  # a TLS file unreadable or a propagator missing, found at start
        print(f"accounts_service: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
