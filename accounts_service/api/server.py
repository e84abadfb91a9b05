"""The gRPC server of the accounts service: its limits (grpc_guard), interceptors, options,
services and port; `serving` runs it and stops it gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import grpc
from accounts.v1 import accounts_pb2, accounts_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from accounts_service import tls
from accounts_service.api.auth import internal_token_guard
from accounts_service.api.servicer import AccountsServicer
from accounts_service.settings import Settings
from grpc_guard.options import server_options
from grpc_guard.server import SMALL_REQUEST_BYTES, Cap, Guard, Limits
from grpc_telemetry.server import RpcTelemetry

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


def build_server(
    settings: Settings,
    telemetry: RpcTelemetry,
    servicer: AccountsServicer,
    health_servicer: health.aio.HealthServicer,
) -> grpc.aio.Server:
    server = grpc.aio.server(
        interceptors=[
            *Guard(guard_limits(settings)).around(telemetry),
            internal_token_guard(settings.internal_token),
        ],
        options=server_options(
            max_message_bytes=settings.max_message_bytes,
            max_streams_per_connection=settings.max_streams_per_connection,
            keepalive_seconds=settings.keepalive_seconds,
            keepalive_timeout_seconds=settings.keepalive_timeout_seconds,
            max_connection_age_seconds=settings.max_connection_age_seconds,
            max_connection_age_grace_seconds=settings.max_connection_age_grace_seconds,
        ),
    )
    accounts_pb2_grpc.add_AccountsServiceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return server


def add_port(server: grpc.aio.Server, settings: Settings) -> int:
    """TLS (mutual with TLS_CLIENT_CA_FILE) when TLS_CERT_FILE is set, else plaintext."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host  # IPv6 in brackets
    address = f"{host}:{settings.port}"
    credentials = tls.server_credentials(settings)
    if credentials is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, credentials)


async def set_health(
    health_servicer: health.aio.HealthServicer, status: health_pb2.HealthCheckResponse.ServingStatus
) -> None:
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, status)


@contextlib.asynccontextmanager
async def serving(
    server: grpc.aio.Server,
    settings: Settings,
    health_servicer: health.aio.HealthServicer,
    stop: asyncio.Event,
    end_streams: Callable[[], None],
) -> AsyncIterator[None]:
    """The server started; on exit NOT_SERVING, `stop` set, the long-lived streams ended (else
    they would hold `server.stop` for the whole grace) and the calls in flight given the grace
    period."""
    port = add_port(server, settings)
    await server.start()
    log.info("listening", extra={"port": port, "settings": repr(settings)})
    try:
        yield
    finally:
        log.info("shutting down", extra={"grace_s": settings.shutdown_grace_seconds})
        await health_servicer.enter_graceful_shutdown()
        stop.set()
        end_streams()
        await server.stop(settings.shutdown_grace_seconds)
