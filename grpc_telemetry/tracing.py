"""OpenTelemetry set-up shared by both services: OFF unless an OTLP endpoint is configured."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


@dataclass(frozen=True)
class Tracing:
    tracer: trace.Tracer | None = None  # None: tracing is off
    provider: TracerProvider | None = None

    async def shutdown(self, wait_seconds: float = 2.0) -> None:
        """Sends the spans still buffered, waiting at most `wait_seconds` for the collector."""
        if self.provider is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.to_thread(self.provider.shutdown), wait_seconds)


OFF = Tracing()


def setup(endpoint: str, service_name: str) -> Tracing:
    """OTLP/gRPC export to `endpoint` (http:// means plaintext); OFF when it is empty."""
    if not endpoint:
        return OFF
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: service_name}), shutdown_on_exit=False
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return Tracing(provider.get_tracer(service_name), provider)
