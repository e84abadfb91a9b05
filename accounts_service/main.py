"""Composition root: settings in, servers and connections opened and closed in order."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable

import grpc
import psycopg
import psycopg_pool
from accounts.v1 import accounts_pb2, accounts_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from accounts_service import db, logs, metrics, tls
from accounts_service.auth import internal_token_guard
from accounts_service.avatar import AvatarLimits
from accounts_service.bus import Bus
from accounts_service.cleanup import StorageCleaner
from accounts_service.errors import Unavailable
from accounts_service.intake import UPLOAD_TTL, AvatarIntake
from accounts_service.outbox import OutboxRelay
from accounts_service.pruner import Pruner, Retention
from accounts_service.ratelimit import TokenBucket
from accounts_service.reconciler import Reconciler
from accounts_service.servicer import AccountsServicer
from accounts_service.settings import Settings, SettingsError, from_env
from accounts_service.storage import Storage
from accounts_service.users import Users
from accounts_service.watch import ChangeHub, Watcher
from grpc_guard.allocator import bound_the_heap
from grpc_guard.options import server_options
from grpc_guard.server import SMALL_REQUEST_BYTES, Cap, Guard, Limits
from grpc_telemetry.endpoint import add_process_collectors
from grpc_telemetry.endpoint import serve as serve_endpoint
from grpc_telemetry.server import RpcTelemetry
from grpc_telemetry.tracing import setup as setup_tracing

log = logging.getLogger("accounts_service")
SERVICE_NAME = accounts_pb2.DESCRIPTOR.services_by_name["AccountsService"].full_name


def guard_limits(settings: Settings) -> Limits:
    def methods(*names: str) -> frozenset[str]:
        return frozenset(f"/{SERVICE_NAME}/{name}" for name in names)

    return Limits(
        max_concurrent_rpcs=settings.max_concurrent_rpcs,
        max_request_bytes=settings.max_request_bytes_in_flight,
        caps=(
            Cap(
                "avatar uploads",
                methods("CreateUser", "UpdateAvatar"),
                settings.max_concurrent_uploads,
                bodies=True,
            ),
            Cap(
                "WatchUser streams",
                methods("WatchUser"),
                settings.max_watch_streams,
                counted=False,  # long-lived: they have their own cap
            ),
        ),
        max_body_bytes=settings.max_avatar_bytes + SMALL_REQUEST_BYTES,
        max_receiving=settings.max_requests_receiving,
        retry_after_seconds=settings.retry_after_seconds,
    )


def build_server(settings: Settings, telemetry: RpcTelemetry) -> grpc.aio.Server:
    return grpc.aio.server(
        interceptors=[
            *Guard(guard_limits(settings)).around(telemetry),
            internal_token_guard(settings.internal_token),
        ],
        options=server_options(
            max_message_bytes=settings.max_message_bytes,
            max_streams_per_connection=settings.max_streams_per_connection,
            keepalive_seconds=settings.keepalive_seconds,
            keepalive_timeout_seconds=settings.keepalive_timeout_seconds,
        ),
    )


def add_port(server: grpc.aio.Server, settings: Settings) -> int:
    """TLS (mutual with TLS_CLIENT_CA_FILE) when TLS_CERT_FILE is set, else plaintext."""
    address = f"[::]:{settings.port}"
    credentials = tls.server_credentials(settings)
    if credentials is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, credentials)


async def retry_until(
    stop: asyncio.Event, what: str, attempt: Callable[[], Awaitable[object]]
) -> bool:
    """Calls `attempt` until it succeeds (True) or `stop` is set (False), backing off to 5 s."""
    delay = 0.2
    while not stop.is_set():
        try:
            await attempt()
            return True
        except (psycopg.Error, psycopg_pool.PoolTimeout, Unavailable, OSError) as exc:
            log.warning("waiting for dependency", extra={"dependency": what, "error": str(exc)})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, 5.0)
    return False


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    servicer_factory: Callable[[Users, Watcher, Storage], AccountsServicer] = AccountsServicer,
) -> None:
    """Runs until `stop` is set, then shuts down within the grace period."""
    observed = metrics.Metrics()
    add_process_collectors(observed.registry)
    traces = setup_tracing(settings.otlp_endpoint, "accounts_service")
    health_servicer = health.aio.HealthServicer()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    pool = db.Pool(
        settings.database_url,
        min_size=settings.db_pool_size,  # opened whole: a burst never waits for the pool to grow
        max_size=settings.db_pool_size,
        max_waiting=settings.db_pool_max_waiting,
        open=False,
        timeout=settings.db_pool_timeout_seconds,
        check=psycopg_pool.AsyncConnectionPool.check_connection,
        name="accounts",
    )
    storage = Storage(settings)
    page_key = hashlib.sha256(b"page-token\0" + settings.internal_token.encode()).digest()
    limits = AvatarLimits(
        settings.max_avatar_bytes,
        settings.max_pixels,
        max_segments=settings.max_segments,
        max_metadata_bytes=settings.max_metadata_bytes,
        max_scans=settings.max_scans,
        max_frames=settings.max_frames,
        max_blocks=settings.max_blocks,
    )
    cleaner = StorageCleaner(pool, storage, settings.cleanup_every_seconds)
    users = Users(
        pool,
        AvatarIntake(
            pool, storage, limits, TokenBucket(settings.uploads_per_second, settings.upload_burst)
        ),
        page_key,
        cleaner,
        settings.old_generation_grace_seconds,
        observed,
    )
    hub = ChangeHub(settings.database_url)
    server = build_server(settings, RpcTelemetry(observed.rpc, traces.tracer))
    accounts_pb2_grpc.add_AccountsServiceServicer_to_server(
        # Half the pool at most for WatchUser reads: a mass wake-up leaves room for other calls.
        servicer_factory(users, Watcher(pool, hub, max(1, settings.db_pool_size // 2)), storage),
        server,
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    endpoint = serve_endpoint(
        settings.metrics_port, observed.registry, "ACCOUNTS_METRICS_PORT", SettingsError
    )  # a taken port stops us here
    port = add_port(server, settings)
    await server.start()
    log.info("listening", extra={"port": port, "settings": repr(settings)})

    bus = Bus(settings.nats_url, auth=settings.nats_auth)
    loops: list[asyncio.Task[None]] = []
    try:
        await pool.open(wait=False)
        if (
            await retry_until(stop, "postgresql", lambda: pool.wait(timeout=5.0))
            and await retry_until(stop, "migrations", lambda: db.migrate(pool))
            and await retry_until(stop, "s3", storage.check)
        ):
            relay = OutboxRelay(
                pool,
                bus,
                settings.database_url,
                settings.relay_poll_seconds,
                metrics=observed,
                tracer=traces.tracer,
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
            loops = [
                asyncio.create_task(relay.run(stop)),
                asyncio.create_task(pruner.run(stop)),
                asyncio.create_task(reconciler.run(stop)),
                asyncio.create_task(hub.run(stop)),
                asyncio.create_task(cleaner.run(stop)),
            ]
            for name in ("", SERVICE_NAME):
                await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
            log.info("serving")
        await stop.wait()
    finally:
        log.info("shutting down", extra={"grace_s": settings.shutdown_grace_seconds})
        await health_servicer.enter_graceful_shutdown()
        stop.set()
        hub.close()  # WatchUser streams would otherwise hold server.stop for the whole grace
        await server.stop(settings.shutdown_grace_seconds)
        await asyncio.gather(*loops)
        await bus.close()
        await pool.close()
        if endpoint is not None:
            endpoint.stop()
        await traces.shutdown()
        log.info("stopped")


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
    logs.configure(settings.log_level, settings.secrets())
    bound_the_heap()  # before any thread starts: see grpc_guard.allocator
    try:
        asyncio.run(run(settings))
    except SettingsError as exc:  # an unreadable TLS file, found when the server is built
        print(f"accounts_service: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
