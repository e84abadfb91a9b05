"""The handlers the guard wraps around a service's own (server.py says in which order).

The admission serves a unary method as a request-streaming one, so that it can take the call's
slots before anything is read, then read and decode the request itself; the verdicts answer a
refusal that the admission handed down in place of a request, inside the observers (telemetry)
so that they see its status.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from google.protobuf.descriptor import Descriptor
from google.rpc import status_pb2

from grpc_guard import status, wire
from grpc_guard.limits import Reservation, Slots

if TYPE_CHECKING:
    from grpc_guard.server import Guard

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"


@dataclass(frozen=True)
class Verdict:
    """What a call's handler gets instead of its request when the guard answers the call."""

    status: status_pb2.Status


def give_back(taken: list[Slots]) -> None:
    for slots in taken:
        slots.give_back()


class Call:
    """One admitted call: its slots and bytes, all given back by `end`."""

    def __init__(self, guard: Guard, method: str, deserializer: Any) -> None:
        self._guard = guard
        self._method = method
        self._deserializer = deserializer
        self._slots: list[Slots] = []
        self._reservation: Reservation | None = None

    async def request(self, context: Context) -> Any:
        """The decoded request, or the Verdict that answers the call instead."""
        self._slots, refusal = self._guard.admit(self._method)
        if refusal is not None:
            return refusal
        received = await self._guard.receive(self._method, context)
        if isinstance(received, Verdict):
            return received
        raw, self._reservation = received
        if not isinstance(raw, bytes):  # EOF: grpc refused the message as too large (it has
            return Verdict(status.no_message())  # answered already), or the client sent none
        if (limit := self._guard.size_limit(self._method)) is not None and len(raw) > limit:
            return Verdict(status.too_large(len(raw), limit))
        if self._reservation is None:
            reservation = self._guard.reserve(len(raw))
            if isinstance(reservation, Verdict):
                return reservation
            self._reservation = reservation
        elif (refusal := self._guard.resize(self._reservation, len(raw))) is not None:
            return refusal
        return self._decode(raw)  # `raw` goes when this returns: only the parsed copy stays

    def _decode(self, raw: bytes) -> Any:
        descriptor = _descriptor(self._deserializer)
        elements = self._guard.limits.max_request_elements
        if descriptor is not None:
            problem = wire.find_problem(raw, descriptor, check_utf8=False, max_elements=elements)
            if problem is not None:
                return _undecodable(problem)
        try:
            return self._deserializer(raw) if self._deserializer is not None else raw
        except Exception:  # whatever the deserializer raises, the bytes are the cause
            problem = None
            if descriptor is not None:
                problem = wire.find_problem(raw, descriptor, max_elements=elements)
            return _undecodable(problem or wire.Problem("", "is not a valid request message"))

    def end(self, *, failed: bool) -> None:
        """`failed`: the call ended with an error (an abort raises one)."""
        give_back(self._slots)
        self._slots = []
        if self._reservation is not None:
            self._guard.release(self._reservation, failed=failed)


def _undecodable(problem: wire.Problem) -> Verdict:
    subject = problem.field or "the request"
    message = f"undecodable request: {subject} {problem.description}"
    violations = [(problem.field, problem.description)] if problem.field else []
    return Verdict(status.invalid_argument(message, violations))


def _descriptor(deserializer: Any) -> Descriptor | None:
    """The message type a generated `Message.FromString` parses, else None."""
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    return descriptor if isinstance(descriptor, Descriptor) else None


class Admission(grpc.aio.ServerInterceptor):
    def __init__(self, guard: Guard) -> None:
        self._guard = guard

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = str(handler_call_details.method)
        if handler is None or handler.request_streaming or self._guard.exempt(method):
            return handler
        guard, deserializer = self._guard, handler.request_deserializer
        if not handler.response_streaming:
            return _unary(handler, lambda: Call(guard, method, deserializer))
        return _streaming(handler, lambda: Call(guard, method, deserializer))


def _unary(handler: Handler, new_call: Callable[[], Call]) -> Handler:
    behavior = handler.unary_unary
    if not inspect.iscoroutinefunction(behavior):
        return handler

    async def admitted(requests: object, context: Context) -> Any:
        call, failed = new_call(), True
        try:
            answer = await behavior(await call.request(context), context)
            failed = False
            return answer
        finally:
            call.end(failed=failed)

    return grpc.stream_unary_rpc_method_handler(
        admitted, request_deserializer=None, response_serializer=handler.response_serializer
    )


def _streaming(handler: Handler, new_call: Callable[[], Call]) -> Handler:
    behavior = handler.unary_stream
    observed: Any
    if inspect.isasyncgenfunction(behavior):

        async def admitted_items(requests: object, context: Context) -> AsyncIterator[Any]:
            call, failed = new_call(), True
            try:
                request = await call.request(context)
                async with contextlib.aclosing(behavior(request, context)) as items:
                    async for item in items:
                        yield item
                failed = False
            finally:
                call.end(failed=failed)

        observed = admitted_items
    elif inspect.iscoroutinefunction(behavior):  # writes its replies to the context

        async def admitted_writer(requests: object, context: Context) -> None:
            call, failed = new_call(), True
            try:
                await behavior(await call.request(context), context)
                failed = False
            finally:
                call.end(failed=failed)

        observed = admitted_writer
    else:
        return handler
    return grpc.stream_stream_rpc_method_handler(
        observed, request_deserializer=None, response_serializer=handler.response_serializer
    )


class Verdicts(grpc.aio.ServerInterceptor):
    """Answers a Verdict handed down by the admission with its status, inside the observers."""

    def __init__(self, exempt: tuple[str, ...]) -> None:
        self._exempt = exempt

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = str(handler_call_details.method)
        if handler is None or handler.request_streaming or method.startswith(self._exempt):
            return handler
        factory: Any
        if handler.response_streaming:
            factory, behavior = grpc.unary_stream_rpc_method_handler, handler.unary_stream
        else:
            factory, behavior = grpc.unary_unary_rpc_method_handler, handler.unary_unary
        answering: Any
        if inspect.isasyncgenfunction(behavior):

            async def answering_items(request: Any, context: Context) -> AsyncIterator[Any]:
                if isinstance(request, Verdict):
                    await status.abort(context, request.status)
                async with contextlib.aclosing(behavior(request, context)) as items:
                    async for item in items:
                        yield item

            answering = answering_items
        elif inspect.iscoroutinefunction(behavior):

            async def answering_call(request: Any, context: Context) -> Any:
                if isinstance(request, Verdict):
                    await status.abort(context, request.status)
                return await behavior(request, context)

            answering = answering_call
        else:
            return handler
        wrapped: Handler = factory(
            answering,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        return wrapped
