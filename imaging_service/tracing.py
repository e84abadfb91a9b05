"""OpenTelemetry tracing, off unless an OTLP endpoint is configured.

Off, no SDK is set up and no span is made. On, spans go to the OTLP/gRPC endpoint in batches.
Each job runs in a CONSUMER span whose parent is the `traceparent` the accounts relay put in the
message headers; its stages and its calls to accounts (the context injected into the gRPC
metadata) are that span's children, so one trace spans CreateUser, the render and
UpdateThumbnails.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import grpc
from opentelemetry import trace

from grpc_telemetry import propagation


@contextmanager
def consumer_span(
    tracer: trace.Tracer, headers: Mapping[str, str], subject: str, message_id: str, attempt: int
) -> Iterator[trace.Span]:
    """The current span while one delivery is handled, continuing the producer's trace."""
    with tracer.start_as_current_span(
        f"{subject} process",
        context=propagation.extract(headers),
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.type": "process",
            "messaging.destination.name": subject,
            "messaging.message.id": message_id,
            "messaging.delivery_count": attempt,
        },
    ) as span:
        yield span


@contextmanager
def client_call(
    tracer: trace.Tracer, method: str, metadata: tuple[tuple[str, str], ...]
) -> Iterator[tuple[tuple[str, str], ...]]:
    """A CLIENT span for one call of `method` (/package.Service/Method); yields `metadata` with
    the span's traceparent added. An AioRpcError marks the span with its status code."""
    service, _, name = method.lstrip("/").rpartition("/")
    with tracer.start_as_current_span(
        method.lstrip("/"),
        kind=trace.SpanKind.CLIENT,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        record_exception=False,
    ) as span:
        carrier: dict[str, str] = {}
        propagation.inject(carrier)
        try:
            yield metadata + tuple(carrier.items())
        except grpc.aio.AioRpcError as exc:
            span.set_attribute("rpc.grpc.status_code", exc.code().value[0])
            raise
        span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.OK.value[0])
