"""The accounts service, as the worker sees it: report thumbnails or a failure for one user."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

import grpc
from accounts.v1 import accounts_pb2, accounts_pb2_grpc
from opentelemetry import trace

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


@dataclass(frozen=True)
class StoredThumbnail:
    """A thumbnail already in storage; ``name`` is small, medium or large."""

    name: str
    object: str
    width: int
    height: int
    size_bytes: int


class AccountsClient:
    """Calls AccountsService.UpdateThumbnails with the internal credential.

    Both reports raise UserGone (the user was deleted), AccountsRejected (our request is
    malformed) or AccountsUnavailable (anything worth a retry, including a wrong token, which an
    operator can fix while the queue holds the job).
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
        self._tracer = tracer or trace.NoOpTracer()
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
        method = "/accounts.v1.AccountsService/GetUser"
        try:
            with client_call(self._tracer, method, self._metadata) as metadata:
                user = await self._stub.GetUser(
                    accounts_pb2.GetUserRequest(id=user_id), metadata=metadata,
                    timeout=self._timeout,
                )  # fmt: skip
        except grpc.aio.AioRpcError as exc:
            raise _translated(exc, user_id, "GetUser") from exc
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
                failure=accounts_pb2.Failure(code=code, reason=reason),
            )
        )

    async def _update(self, request: accounts_pb2.UpdateThumbnailsRequest) -> None:
        if self._stub is None:
            raise RuntimeError("AccountsClient used outside 'async with'")
        method = "/accounts.v1.AccountsService/UpdateThumbnails"
        try:
            with client_call(self._tracer, method, self._metadata) as metadata:
                await self._stub.UpdateThumbnails(request, metadata=metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise _translated(exc, request.user_id, "UpdateThumbnails") from exc


def _translated(exc: grpc.aio.AioRpcError, user_id: str, method: str) -> Exception:
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.NOT_FOUND:
        return UserGone(f"user {user_id}: {details}")
    if code in _REJECTED:
        return AccountsRejected(f"{method} {code.name}: {details}")
    return AccountsUnavailable(f"{method} {code.name}: {details}")
