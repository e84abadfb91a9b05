"""OpenTelemetry set-up shared by both services: OFF unless an OTLP endpoint is configured.

The standard `OTEL_*` variables apply as the OpenTelemetry spec says. Read here, from the mapping
the service passes: the endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`, validated by the service's
settings, or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns tracing on, `OTEL_SDK_DISABLED=true` off,
`OTEL_PROPAGATORS` picks the propagators (see propagation.py). Read by the SDK itself, from the
process environment: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (both win over the
service's own name), `OTEL_TRACES_SAMPLER`/`_ARG`, `OTEL_BSP_*`, the other `OTEL_EXPORTER_OTLP_*`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from grpc_telemetry import propagation

TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
SDK_DISABLED = "OTEL_SDK_DISABLED"


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


def enabled(endpoint: str, env: Mapping[str, str]) -> bool:
    """Whether `setup` turns tracing on: an endpoint, and the SDK not disabled."""
    if env.get(SDK_DISABLED, "").strip().lower() == "true":  # the spec: only "true" disables
        return False
    return bool(endpoint or env.get(TRACES_ENDPOINT, "").strip())


def setup(
    endpoint: str,
    service_name: str,
    env: Mapping[str, str],
    error: type[Exception] = ValueError,
) -> Tracing:
    """OTLP/gRPC export to `endpoint` (http:// means plaintext) or to the traces endpoint `env`
    names; OFF when neither is set or the SDK is disabled. A propagator `OTEL_PROPAGATORS` names
    that is not installed raises `error`, so the service stops at start with one clear line."""
    try:
        propagation.configure(env)
    except propagation.PropagatorMissing as exc:
        raise error(str(exc)) from exc
    if not enabled(endpoint, env):
        return OFF
    provider = TracerProvider(resource=resource(service_name), shutdown_on_exit=False)
    # Without an endpoint argument the exporter reads OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, which
    # the spec puts before OTEL_EXPORTER_OTLP_ENDPOINT.
    exporter = OTLPSpanExporter(endpoint=None if env.get(TRACES_ENDPOINT) else endpoint)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider.get_tracer(service_name), provider)


def resource(service_name: str) -> Resource:
    """The SDK's resource (OTEL_RESOURCE_ATTRIBUTES included) named `service_name` unless
    OTEL_SERVICE_NAME or a `service.name` in OTEL_RESOURCE_ATTRIBUTES names it."""
    ours = Resource.create({SERVICE_NAME: service_name})
    return ours.merge(OTELResourceDetector().detect())
