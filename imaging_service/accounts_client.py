"""The accounts service, as the worker sees it: where a user stands (GetUser), and the report of
thumbnails or a failure for one avatar generation (UpdateThumbnails). gRPC errors end here."""

from __future__ import annotations

import asyncio
import contextlib
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

import grpc
from accounts.v1 import accounts_pb2, accounts_pb2_grpc
from opentelemetry import trace

from grpc_guard.status import retry_delay
from imaging_service import tls
from imaging_service.errors import AccountsRejected, AccountsUnavailable, UserGone
from imaging_service.tracing import client_call

# Our request is wrong and will be wrong again: retrying cannot help.
_REJECTED = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
MAX_REASON_CHARS = 1000  # accounts keeps no more
_MIN_RETRY_WAIT_SECONDS = 0.05  # a RetryInfo of 0 s must not make a busy loop
T = TypeVar("T")


def printable(reason: str) -> str:
    """A failure reason accounts accepts: control characters (which it refuses, since clients
    show the reason as it is) become spaces, and it is cut to what accounts keeps. Reasons are
    often exception strings, with newlines or bytes quoted from the file."""
    cleaned = "".join(" " if unicodedata.category(c) == "Cc" else c for c in reason)
    return cleaned[:MAX_REASON_CHARS]


@dataclass(frozen=True)
class StoredThumbnail:
    """A thumbnail already in storage; ``name`` is small, medium or large."""

    name: str
    object: str
    width: int
    height: int
    size_bytes: int


class AccountsClient:
    """Calls AccountsService.GetUser and UpdateThumbnails with the internal credential.

    Every call raises UserGone (the user was deleted), AccountsRejected (our request is
    malformed) or AccountsUnavailable (anything worth a retry, including a wrong token, which an
    operator can fix while the queue holds the job); never a gRPC error.

    An overloaded accounts answers RESOURCE_EXHAUSTED with RetryInfo: the call is tried again
    after the delay it asks for, as long as that still fits in ``timeout`` (which bounds all the
    attempts together); otherwise AccountsUnavailable at once, and the job is retried later with
    the consumer's back-off. RESOURCE_EXHAUSTED without RetryInfo is AccountsUnavailable too.
    """

    def __init__(
        self,
        addr: str,
        token: str,
        timeout: float = 10.0,
        credentials: grpc.ChannelCredentials | None = None,  # None: plaintext
        tracer: trace.Tracer | None = None,  # None: no spans, no trace context sent
    ) -> None:
        self._addr = addr
        self._tracer = tracer
        self._credentials = credentials
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._stub: accounts_pb2_grpc.AccountsServiceAsyncStub | None = None

    async def __aenter__(self) -> AccountsClient:
        self._channel = tls.channel(self._addr, self._credentials)  # connects lazily
        self._stub = accounts_pb2_grpc.AccountsServiceStub(self._channel)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def current(self, user_id: str) -> tuple[int, int]:
        """The user's avatar generation and thumbnail status (accounts_pb2.ThumbnailStatus)."""
        if self._stub is None:
            raise RuntimeError("AccountsClient used outside 'async with'")
        stub, method = self._stub, "/accounts.v1.AccountsService/GetUser"

        async def get(seconds: float) -> accounts_pb2.User:
            with self._traced(method) as metadata:
                return await stub.GetUser(
                    accounts_pb2.GetUserRequest(id=user_id), metadata=metadata, timeout=seconds
                )

        user = await self._call(get, user_id, "GetUser")
        return user.avatar.generation, user.thumbnail_status

    async def report_thumbnails(
        self, user_id: str, generation: int, thumbnails: list[StoredThumbnail]
    ) -> None:
        fields = {
            t.name: accounts_pb2.Thumbnail(
                object=t.object, width=t.width, height=t.height, size_bytes=t.size_bytes
            )
            for t in thumbnails
        }
        await self._update(
            accounts_pb2.UpdateThumbnailsRequest(
                user_id=user_id,
                avatar_generation=generation,
                thumbnails=accounts_pb2.Thumbnails(**fields),
            )
        )

    async def report_failure(self, user_id: str, generation: int, code: str, reason: str) -> None:
        await self._update(
            accounts_pb2.UpdateThumbnailsRequest(
                user_id=user_id,
                avatar_generation=generation,
                failure=accounts_pb2.Failure(code=code, reason=printable(reason)),
            )
        )

    async def _update(self, request: accounts_pb2.UpdateThumbnailsRequest) -> None:
        if self._stub is None:
            raise RuntimeError("AccountsClient used outside 'async with'")
        stub, method = self._stub, "/accounts.v1.AccountsService/UpdateThumbnails"

        async def update(seconds: float) -> None:
            with self._traced(method) as metadata:
                await stub.UpdateThumbnails(request, metadata=metadata, timeout=seconds)

        await self._call(update, request.user_id, "UpdateThumbnails")

    def _traced(
        self, method: str
    ) -> contextlib.AbstractContextManager[tuple[tuple[str, str], ...]]:
        """The metadata of a call, in a CLIENT span that it carries when tracing is on."""
        if self._tracer is None:
            return contextlib.nullcontext(self._metadata)
        return client_call(self._tracer, method, self._metadata)

    async def _call(self, attempt: Callable[[float], Awaitable[T]], user_id: str, name: str) -> T:
        """``attempt(seconds left)`` until it answers, again after each RetryInfo delay that
        fits in the time left; raises the translated error."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while True:
            try:
                return await attempt(max(deadline - loop.time(), 0.0))
            except grpc.aio.AioRpcError as exc:
                delay = (
                    retry_delay(exc) if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED else None
                )
                if delay is None or loop.time() + delay >= deadline:
                    raise _translated(exc, user_id, name) from exc
                await asyncio.sleep(max(delay, _MIN_RETRY_WAIT_SECONDS))


def _translated(exc: grpc.aio.AioRpcError, user_id: str, method: str) -> Exception:
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.NOT_FOUND:
        return UserGone(f"user {user_id}: {details}")
    if code in _REJECTED:
        return AccountsRejected(f"{method} {code.name}: {details}")
    return AccountsUnavailable(f"{method} {code.name}: {details}")
