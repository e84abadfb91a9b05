"""Our errors to gRPC statuses, in one table, for unary and server-streaming methods alike."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2

from accounts_service.errors import (
    AccountsError,
    AlreadyExists,
    InvalidArgument,
    NotFound,
    Overloaded,
    Unauthenticated,
    Unavailable,
)
from grpc_guard import status as guard_status

log = logging.getLogger(__name__)
ERROR_DOMAIN = "accounts.v1"
T = TypeVar("T")

_CODES: dict[type[AccountsError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: AccountsError) -> NoReturn:
    """Aborts with the mapped code, plus BadRequest/ErrorInfo details for invalid arguments and
    RetryInfo for a limit reached."""
    if isinstance(exc, Overloaded):
        await guard_status.abort(
            context, guard_status.resource_exhausted(str(exc), exc.retry_after_seconds)
        )
    code = next(
        (_CODES[kind] for kind in type(exc).__mro__ if kind in _CODES), grpc.StatusCode.INTERNAL
    )
    status = status_pb2.Status(code=code.value[0], message=str(exc))
    if isinstance(exc, InvalidArgument):
        bad = error_details_pb2.BadRequest()
        for field, description in exc.violations:
            bad.field_violations.add(field=field, description=description)
        status.details.add().Pack(bad)
        if exc.code:
            status.details.add().Pack(
                error_details_pb2.ErrorInfo(reason=exc.code, domain=ERROR_DOMAIN)
            )
    await context.abort(
        code, str(exc), trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),)
    )
    raise AssertionError("unreachable")  # context.abort always raises


def translated(
    method: Callable[..., Awaitable[T]],
) -> Callable[..., Awaitable[T]]:
    """Turns our errors into gRPC statuses (the adapters raise nothing else we expect).

    A call the client cancelled, or whose deadline passed, is cancelled here too (grpc cancels
    the handler's task): it stops at its next await and does nothing more.
    """

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> T:
        async with _as_status(context, method.__name__):
            return await method(self, request, context)
        raise AssertionError("unreachable")  # _as_status re-raises or aborts

    return wrapper


def translated_stream(
    method: Callable[..., AsyncGenerator[T, None]],
) -> Callable[..., AsyncGenerator[T, None]]:
    """`translated` for server-streaming methods; the method's generator is always closed."""

    @functools.wraps(method)
    async def wrapper(
        self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncGenerator[T, None]:
        async with (
            _as_status(context, method.__name__),
            contextlib.aclosing(method(self, request, context)) as items,
        ):
            async for item in items:
                yield item

    return wrapper


@contextlib.asynccontextmanager
async def _as_status(
    context: grpc.aio.ServicerContext[Any, Any], method: str
) -> AsyncIterator[None]:
    """Our errors become gRPC statuses; a cancelled call is logged."""
    try:
        yield
    except AccountsError as exc:
        await abort(context, exc)
    except asyncio.CancelledError:
        log.info("call cancelled", extra={"method": method})
        raise
