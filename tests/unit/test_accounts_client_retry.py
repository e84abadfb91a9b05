"""The imaging service's accounts client honours RetryInfo, within the time it has for a call.

Against a real gRPC server on a loopback port, in this process: no other system involved.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from accounts.v1 import accounts_pb2, accounts_pb2_grpc

from grpc_guard.status import abort, resource_exhausted
from imaging_service.accounts_client import AccountsClient
from imaging_service.errors import AccountsUnavailable


class Busy(accounts_pb2_grpc.AccountsServiceServicer):
    """GetUser refused ``refusals`` times with RESOURCE_EXHAUSTED (RetryInfo of ``retry_after``
    seconds, none when None), then answered."""

    def __init__(self) -> None:
        self.refusals = 0
        self.retry_after: float | None = 0.05
        self.calls = 0

    async def GetUser(
        self, request: accounts_pb2.GetUserRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> accounts_pb2.User:
        self.calls += 1
        if self.calls <= self.refusals:
            if self.retry_after is None:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy")
            await abort(context, resource_exhausted("busy", self.retry_after))
        return accounts_pb2.User(
            id=request.id,
            avatar=accounts_pb2.Avatar(generation=3),
            thumbnail_status=accounts_pb2.THUMBNAIL_STATUS_PENDING,
        )


@pytest.fixture
async def busy() -> AsyncIterator[tuple[Busy, str]]:
    servicer = Busy()
    server = grpc.aio.server()
    accounts_pb2_grpc.add_AccountsServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_waits_the_delay_accounts_asks_for_and_tries_again(busy: tuple[Busy, str]) -> None:
    servicer, addr = busy
    servicer.refusals = 2
    async with AccountsClient(addr, "token", timeout=10.0) as client:
        assert await client.current("u1") == (3, accounts_pb2.THUMBNAIL_STATUS_PENDING)
    assert servicer.calls == 3


async def test_a_delay_past_the_calls_time_is_unavailable_at_once(busy: tuple[Busy, str]) -> None:
    servicer, addr = busy
    servicer.refusals, servicer.retry_after = 1, 30.0
    async with AccountsClient(addr, "token", timeout=2.0) as client:
        with pytest.raises(AccountsUnavailable, match="RESOURCE_EXHAUSTED"):
            await client.current("u1")
    assert servicer.calls == 1


async def test_resource_exhausted_without_retry_info_is_unavailable(
    busy: tuple[Busy, str],
) -> None:
    servicer, addr = busy
    servicer.refusals, servicer.retry_after = 1, None
    async with AccountsClient(addr, "token", timeout=10.0) as client:
        with pytest.raises(AccountsUnavailable, match="RESOURCE_EXHAUSTED"):
            await client.current("u1")
    assert servicer.calls == 1
