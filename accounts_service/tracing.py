"""OpenTelemetry tracing, off unless an OTLP endpoint is configured.

Off, no SDK is set up and every tracer is a no-op. On, spans go to the OTLP/gRPC endpoint in
batches. The trace context is stored with each outbox row as a W3C `traceparent` by the request
that wrote it, and put in the NATS headers of the event by the relay (in the form of the
propagators OTEL_PROPAGATORS names, see grpc_telemetry.propagation).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from grpc_telemetry import propagation

TRACEPARENT = "traceparent"
PROPAGATOR = TraceContextTextMapPropagator()  # the stored form; the wire's: OTEL_PROPAGATORS


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
    parent = PROPAGATOR.extract({TRACEPARENT: traceparent} if traceparent else {}, Context())
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
        propagation.inject(headers)
        if traceparent and not headers:  # no span here: tracing is off
            headers[TRACEPARENT] = traceparent
        yield headers
