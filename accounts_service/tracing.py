"""OpenTelemetry tracing, off unless an OTLP endpoint is configured.

Off, no SDK is set up and every tracer is a no-op. On, spans go to the OTLP/gRPC endpoint in
batches. The trace context travels as a W3C `traceparent`: stored with each outbox row by the
request that wrote it, and put in the NATS headers of the event by the relay.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from grpc_telemetry.server import remote_context

TRACEPARENT = "traceparent"
PROPAGATOR = TraceContextTextMapPropagator()


def current_traceparent() -> str | None:
    """The `traceparent` of the current span; None when there is none (tracing off)."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT)


@contextmanager
def producer_span(
    tracer: trace.Tracer, subject: str, event_id: str, traceparent: str | None
) -> Iterator[dict[str, str]]:
    """A PRODUCER span for publishing one outbox event, child of the request that wrote it;
    yields the headers that carry it on (the stored traceparent when tracing is off here)."""
    parent = remote_context({TRACEPARENT: traceparent} if traceparent else {})
    with tracer.start_as_current_span(
        f"{subject} publish",
        context=parent,
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.type": "send",
            "messaging.destination.name": subject,
            "messaging.message.id": event_id,
        },
    ):
        headers: dict[str, str] = {}
        PROPAGATOR.inject(headers)
        if traceparent and TRACEPARENT not in headers:
            headers[TRACEPARENT] = traceparent
        yield headers
