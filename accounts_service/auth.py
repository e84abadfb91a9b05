"""Bearer-token guard for internal RPCs, as a server interceptor."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc

UPDATE_THUMBNAILS = "/accounts.v1.AccountsService/UpdateThumbnails"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class InternalTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses guarded methods with UNAUTHENTICATED unless `authorization: Bearer <token>`."""

    def __init__(
        self, token: str, methods: frozenset[str] = frozenset({UPDATE_THUMBNAILS})
    ) -> None:
        self._expected = f"Bearer {token}".encode()
        self._methods = methods
        self._deny: Handler = grpc.unary_unary_rpc_method_handler(_deny)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        if handler_call_details.method in self._methods:
            metadata = dict(handler_call_details.invocation_metadata or ())
            given = metadata.get("authorization", "")
            given_bytes = given.encode() if isinstance(given, str) else bytes(given)
            if not hmac.compare_digest(given_bytes, self._expected):
                return self._deny
        return await continuation(handler_call_details)


async def _deny(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await context.abort(
        grpc.StatusCode.UNAUTHENTICATED,
        "internal method: send 'authorization: Bearer <INTERNAL_TOKEN>'",
    )
