"""The gRPC server: ImagingService, health and reflection, behind grpc_guard's limits and the
internal-token check; started NOT_SERVING (``listen``), stopped once (``Listening.stop``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from imaging.v1 import imaging_pb2, imaging_pb2_grpc
from opentelemetry import trace

from grpc_guard.auth import InternalTokenInterceptor
from grpc_guard.options import server_options
from grpc_guard.server import SMALL_REQUEST_BYTES, Cap, Guard
from grpc_guard.server import Limits as GuardLimits
from grpc_telemetry.server import RpcMetrics, RpcTelemetry
from imaging_service import tls
from imaging_service.servicer import INTERNAL_METHODS, ImagingServicer
from imaging_service.settings import MAX_MESSAGE_BYTES, Settings

log = logging.getLogger("imaging_service")
SERVICE_NAME = imaging_pb2.DESCRIPTOR.services_by_name["ImagingService"].full_name


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


class Listening:
    """The started gRPC server and its health service. ``stop`` (NOT_SERVING, then the RPCs
    finished within ``grace``) runs once, however many times it is awaited."""

    def __init__(
        self, server: grpc.aio.Server, health_servicer: health.aio.HealthServicer, grace: float
    ) -> None:
        self._server = server
        self._health = health_servicer
        self._grace = grace
        self._stopped: asyncio.Future[None] | None = None

    async def serving(self) -> None:
        await set_health(self._health, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self) -> None:
        if self._stopped is None:
            self._stopped = asyncio.ensure_future(self._stop())
        await self._stopped

    async def _stop(self) -> None:
        await self._health.enter_graceful_shutdown()
        await self._server.stop(self._grace)


async def listen(
    settings: Settings,
    servicer: ImagingServicer,
    rpc_metrics: RpcMetrics,
    tracer: trace.Tracer | None,
) -> Listening:
    """The gRPC server started, NOT_SERVING until ``Listening.serving``."""
    health_servicer = health.aio.HealthServicer()
    await set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
    server, port = await start_server(
        settings.port,
        servicer,
        health_servicer,
        tls.server_credentials(settings),
        [
            *Guard(guard_limits(settings)).around(RpcTelemetry(rpc_metrics, tracer)),
            InternalTokenInterceptor(settings.internal_token, INTERNAL_METHODS),
        ],
        server_options(
            max_message_bytes=MAX_MESSAGE_BYTES,
            max_streams_per_connection=settings.max_streams_per_connection,
            keepalive_seconds=settings.keepalive_seconds,
            keepalive_timeout_seconds=settings.keepalive_timeout_seconds,
            max_connection_age_seconds=settings.max_connection_age_seconds,
            max_connection_age_grace_seconds=settings.max_connection_age_grace_seconds,
        ),
    )
    log.info("listening", extra={"port": port, "settings": repr(settings)})
    return Listening(server, health_servicer, settings.shutdown_grace_seconds)
