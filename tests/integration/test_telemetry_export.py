"""The exporter reads its OTEL_EXPORTER_OTLP_* variables as the spec says: a real OTLP/gRPC receiver
(the test's own) gets the spans at the traces endpoint, with the configured headers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from accounts_service.settings import SettingsError
from devstack.net import free_port, wait_until
from grpc_telemetry import tracing


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps, for each span it is sent: its name, the service.name and the call's metadata."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.got: list[tuple[str, str, dict[str, str]]] = []

    def Export(self, request: Any, context: Any) -> Any:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        with self._lock:
            for resource_spans in request.resource_spans:
                attributes = {
                    a.key: a.value.string_value for a in resource_spans.resource.attributes
                }
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.got.append((span.name, attributes["service.name"], metadata))
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[tuple[str, str, dict[str, str]]]:
        with self._lock:
            return list(self.got)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    servicer = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"http://127.0.0.1:{port}"
    server.stop(0)


def test_the_traces_endpoint_and_headers_variables_reach_the_exporter(
    receiver: tuple[Receiver, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    servicer, url = receiver
    nobody = f"http://127.0.0.1:{free_port()}"  # OTEL_EXPORTER_OTLP_ENDPOINT: nothing listens
    env = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": url,  # the spec puts it before the generic one
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-tenant=acme",
        "OTEL_SERVICE_NAME": "thumbnailer",
    }
    for name, value in env.items():  # read by the SDK from the process environment
        monkeypatch.setenv(name, value)
    traces = tracing.setup(nobody, "imaging_service", env, SettingsError)
    assert traces.tracer is not None and traces.provider is not None
    try:
        traces.tracer.start_span("job").end()
        traces.provider.force_flush()
        wait_until(lambda: bool(servicer.spans()), 10, "the span at the traces endpoint")
    finally:
        traces.provider.shutdown()
    [(name, service, metadata)] = servicer.spans()
    assert (name, service, metadata["x-tenant"]) == ("job", "thumbnailer", "acme")
