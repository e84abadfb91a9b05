"""Server interceptor: Prometheus metrics for every RPC and, with tracing on, a SERVER span.

Unary and streaming handlers alike, async generators (WatchUser, reflection) and coroutines that
write to the context (health Watch). The status code is the one the handler aborted with or set;
else OK on return, CANCELLED or DEADLINE_EXCEEDED when the call's task was cancelled, UNKNOWN on any
other exception (what grpc answers then).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeAlias

import grpc
from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Histogram

from grpc_telemetry import propagation

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
# Server span status per the OpenTelemetry conventions: only these codes are the server's fault.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class RpcMetrics:
    """gRPC server metrics under the names go-grpc-prometheus made common."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("grpc_type", "grpc_service", "grpc_method")
        self.started = Counter(
            "grpc_server_started_total", "RPCs started on the server.", labels, registry=registry
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, by status code.",
            (*labels, "grpc_code"),
            registry=registry,
        )
        self.seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its status (a stream: its whole life).",
            labels,
            buckets=RPC_BUCKETS,
            registry=registry,
        )


class RpcTelemetry(grpc.aio.ServerInterceptor):
    """Put it first in the server's interceptors, so it also sees what later ones refuse."""

    def __init__(self, metrics: RpcMetrics, tracer: trace.Tracer | None = None) -> None:
        self._metrics = metrics
        self._tracer = tracer  # None: no spans

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler: Handler | None = await continuation(handler_call_details)
        if handler is None:
            return None
        method = str(handler_call_details.method)
        grpc_type = _grpc_type(handler)

        def start(context: Context) -> _Call:
            return _Call(self._metrics, self._tracer, method, grpc_type, context)

        return _wrapped(handler, start)


class _Call:
    """One RPC: counted when it starts, observed once its status is known."""

    def __init__(
        self,
        metrics: RpcMetrics,
        tracer: trace.Tracer | None,
        method: str,
        grpc_type: str,
        context: Context,
    ) -> None:
        service, _, name = method.lstrip("/").rpartition("/")
        self._metrics = metrics
        self._labels = (grpc_type, service, name)
        self._context = context
        metrics.started.labels(*self._labels).inc()
        self._started = time.perf_counter()
        self._span: trace.Span | None = None
        if tracer is not None:
            metadata = {
                k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)
            }
            self._span = tracer.start_span(
                method.lstrip("/"),
                context=propagation.extract(metadata),
                kind=trace.SpanKind.SERVER,
                attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            )

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        """The span is the current one inside: what the handler does becomes its children."""
        if self._span is None:
            yield
            return
        # Aborts are exceptions too: the status is set in `finish`, from the code.
        with trace.use_span(
            self._span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        ):
            yield

    def finish(self, exc: BaseException | None) -> None:
        code = _code(self._context, exc)
        self._metrics.handled.labels(*self._labels, code.name).inc()
        self._metrics.seconds.labels(*self._labels).observe(time.perf_counter() - self._started)
        if self._span is not None:
            self._span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code == grpc.StatusCode.UNKNOWN and exc is not None:
                self._span.record_exception(exc)  # a bug in the handler
            if code in _SERVER_ERRORS:
                self._span.set_status(trace.StatusCode.ERROR, code.name)
            self._span.end()


def _code(context: Context, exc: BaseException | None) -> grpc.StatusCode:
    code: object = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if exc is None:
        return grpc.StatusCode.OK
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _grpc_type(handler: Handler) -> str:
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def _wrapped(handler: Handler, start: Callable[[Context], _Call]) -> Handler:
    """The same handler with its behaviour observed; a synchronous one is left as it is."""
    factory: Any
    if handler.request_streaming and handler.response_streaming:
        factory, behavior = grpc.stream_stream_rpc_method_handler, handler.stream_stream
    elif handler.request_streaming:
        factory, behavior = grpc.stream_unary_rpc_method_handler, handler.stream_unary
    elif handler.response_streaming:
        factory, behavior = grpc.unary_stream_rpc_method_handler, handler.unary_stream
    else:
        factory, behavior = grpc.unary_unary_rpc_method_handler, handler.unary_unary
    if inspect.isasyncgenfunction(behavior):
        observed: Any = _generator(behavior, start)
    elif inspect.iscoroutinefunction(behavior):
        observed = _coroutine(behavior, start)
    else:
        return handler
    wrapped: Handler = factory(
        observed,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
    return wrapped


def _coroutine(behavior: Any, start: Callable[[Context], _Call]) -> Any:
    async def observed(request: Any, context: Context) -> Any:
        call = start(context)
        try:
            with call.current():
                result = await behavior(request, context)
        except BaseException as exc:
            call.finish(exc)
            raise
        call.finish(None)
        return result

    return observed


def _generator(behavior: Any, start: Callable[[Context], _Call]) -> Any:
    async def observed(request: Any, context: Context) -> AsyncIterator[Any]:
        # The span is not made current here: a generator may be resumed in another context.
        call = start(context)
        try:
            async with contextlib.aclosing(behavior(request, context)) as items:
                async for item in items:
                    yield item
        except BaseException as exc:
            call.finish(exc)
            raise
        call.finish(None)

    return observed
