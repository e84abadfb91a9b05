"""The internal credential: a bearer token that guarded methods require, as a server interceptor.

    InternalTokenInterceptor(token, {"/accounts.v1.AccountsService/UpdateThumbnails"})

A guarded call without `authorization: Bearer <token>`, or with another token, ends with
UNAUTHENTICATED before its servicer runs; every other method passes untouched.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeAlias

import grpc

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
DENIED = "internal method: send 'authorization: Bearer <INTERNAL_TOKEN>'"


class InternalTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses ``methods`` (full names, "/pkg.Service/Method") with UNAUTHENTICATED unless the
    call carries ``authorization: Bearer <token>``; compared in constant time."""

    def __init__(self, token: str, methods: Iterable[str]) -> None:
        if not token:
            raise ValueError("the internal token must not be empty")
        self._expected = f"Bearer {token}".encode()
        self._methods = frozenset(methods)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method not in self._methods:
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = metadata.get("authorization", "")
        given_bytes = given.encode() if isinstance(given, str) else bytes(given)
        if hmac.compare_digest(given_bytes, self._expected):
            return handler
        return _denying(handler)


def _denying(handler: Handler) -> Handler:
    """A handler of the same kind as ``handler`` that refuses the call without parsing it."""
    serializer = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(_deny, response_serializer=serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(_deny, response_serializer=serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(_deny, response_serializer=serializer)
    return grpc.unary_unary_rpc_method_handler(_deny, response_serializer=serializer)


async def _deny(request: Any, context: Context) -> Any:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, DENIED)
