"""The RPC telemetry interceptor of both services on a real gRPC server: metrics and spans.

The server carries only the standard services, whose handlers come in every shape the
interceptor must wrap: health Check (unary), health Watch (a coroutine writing to the context)
and reflection (a bidirectional async generator).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from types import ModuleType
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from accounts_service import metrics as accounts_metrics
from devstack.net import eventually
from grpc_guard.auth import InternalTokenInterceptor
from grpc_telemetry import server as rpc
from imaging_service import metrics as imaging_metrics

HEALTH = "grpc.health.v1.Health"
# One interceptor, wired into each service's own metrics registry.
SERVICES = {"accounts": (rpc, accounts_metrics), "imaging": (rpc, imaging_metrics)}
DEADLINE = 10.0


@pytest.fixture(params=sorted(SERVICES))
def modules(request: pytest.FixtureRequest) -> tuple[ModuleType, ModuleType]:
    return SERVICES[request.param]


@pytest.fixture
def exporter() -> Iterator[tuple[trace.Tracer, InMemorySpanExporter]]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield provider.get_tracer("test"), spans
    provider.shutdown()


@asynccontextmanager
async def served(*interceptors: grpc.aio.ServerInterceptor) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=interceptors)
    health_servicer = health.aio.HealthServicer()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(0)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def handled(method: str, code: str, grpc_type: str, service: str = HEALTH) -> dict[str, str]:
    return {
        "grpc_type": grpc_type,
        "grpc_service": service,
        "grpc_method": method,
        "grpc_code": code,
    }


async def eventually_equal(read: Any, expected: float, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while read() != expected:
        assert time.monotonic() < deadline, f"{what}: {read()} != {expected}"
        await asyncio.sleep(0.02)  # poll until the deadline


async def test_unary_calls_are_counted_by_method_and_code(
    modules: tuple[ModuleType, ModuleType],
) -> None:
    rpc, metrics = modules
    observed = metrics.Metrics(CollectorRegistry())
    async with served(rpc.RpcTelemetry(observed.rpc)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(2):
            await stub.Check(health_pb2.HealthCheckRequest())
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.Check(health_pb2.HealthCheckRequest(service="nope"))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    r = observed.registry
    assert value(r, "grpc_server_handled_total", **handled("Check", "OK", "unary")) == 2
    assert value(r, "grpc_server_handled_total", **handled("Check", "NOT_FOUND", "unary")) == 1
    labels = {"grpc_type": "unary", "grpc_service": HEALTH, "grpc_method": "Check"}
    assert value(r, "grpc_server_started_total", **labels) == 3
    assert value(r, "grpc_server_handling_seconds_count", **labels) == 3
    assert value(r, "grpc_server_handling_seconds_sum", **labels) > 0


async def test_streams_are_counted_when_they_end_however_they_end(
    modules: tuple[ModuleType, ModuleType],
) -> None:
    rpc, metrics = modules
    observed = metrics.Metrics(CollectorRegistry())
    r = observed.registry
    async with served(rpc.RpcTelemetry(observed.rpc)) as channel:
        health_stub = health_pb2_grpc.HealthStub(channel)
        watch = health_stub.Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
        cancelled = handled("Watch", "CANCELLED", "server_stream")
        await eventually_equal(
            lambda: value(r, "grpc_server_handled_total", **cancelled), 1, "cancelled Watch"
        )

        late = health_stub.Watch(health_pb2.HealthCheckRequest(), timeout=0.3)
        with pytest.raises(grpc.aio.AioRpcError) as expired:
            async for _ in late:
                pass
        assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        timed_out = handled("Watch", "DEADLINE_EXCEEDED", "server_stream")
        await eventually_equal(
            lambda: value(r, "grpc_server_handled_total", **timed_out), 1, "expired Watch"
        )

        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = [reply async for reply in stub.ServerReflectionInfo(iter([request]))]
        assert replies[0].list_services_response.service
    info = handled("ServerReflectionInfo", "OK", "bidi_stream", reflection.SERVICE_NAME)
    assert value(r, "grpc_server_handled_total", **info) == 1


async def test_refusals_of_a_later_interceptor_are_counted_too() -> None:
    observed = accounts_metrics.Metrics(CollectorRegistry())
    guard = InternalTokenInterceptor("secret", frozenset({f"/{HEALTH}/Check"}))
    async with served(rpc.RpcTelemetry(observed.rpc), guard) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    labels = handled("Check", "UNAUTHENTICATED", "unary")
    assert value(observed.registry, "grpc_server_handled_total", **labels) == 1


async def test_server_spans_continue_the_callers_trace(
    modules: tuple[ModuleType, ModuleType], exporter: tuple[trace.Tracer, InMemorySpanExporter]
) -> None:
    rpc, metrics = modules
    tracer, spans = exporter
    caller = trace.SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    traceparent = f"00-{caller.trace_id:032x}-{caller.span_id:016x}-01"
    async with served(rpc.RpcTelemetry(metrics.Metrics().rpc, tracer)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        await stub.Check(health_pb2.HealthCheckRequest(), metadata=(("traceparent", traceparent),))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Check(health_pb2.HealthCheckRequest(service="nope"))
        # The server ends a call's span once the answer is on its way: the caller may have it
        # first.
        await eventually(lambda: len(spans.get_finished_spans()) == 2, 5, "both server spans")
    ok, not_found = spans.get_finished_spans()
    assert ok.name == f"{HEALTH}/Check"
    assert ok.kind == trace.SpanKind.SERVER
    assert ok.context.trace_id == caller.trace_id
    assert ok.parent is not None and ok.parent.span_id == caller.span_id
    assert ok.attributes is not None and ok.attributes["rpc.grpc.status_code"] == 0
    assert not_found.parent is None  # no traceparent sent: a trace of its own
    assert not_found.attributes is not None and not_found.attributes["rpc.grpc.status_code"] == 5
    assert not_found.status.status_code == trace.StatusCode.UNSET  # the caller's error, not ours
