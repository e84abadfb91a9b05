"""The guard on a real grpc.aio server (port 0) with a small test servicer and the RPC metrics:
in-flight limits answered with RESOURCE_EXHAUSTED and RetryInfo, health unaffected, bytes given
back after every call, undecodable requests answered with INVALID_ARGUMENT and counted."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from accounts.v1 import accounts_pb2, accounts_pb2_grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import CollectorRegistry

from devstack.net import eventually
from grpc_guard.options import server_options
from grpc_guard.server import Cap, Guard, Limits
from grpc_guard.status import retry_delay
from grpc_telemetry.server import RpcMetrics, RpcTelemetry

REPO = Path(__file__).resolve().parents[2]
SERVICE = "accounts.v1.AccountsService"
RETRY_AFTER = 0.25
MAX_BODY = 700 * 1024  # the server's receive limit
LIMITS = Limits(
    max_concurrent_rpcs=3,
    max_request_bytes=1024 * 1024,
    caps=(
        Cap("avatar uploads", frozenset({f"/{SERVICE}/CreateUser"}), 2, bodies=True),
        Cap("WatchUser streams", frozenset({f"/{SERVICE}/WatchUser"}), 2, counted=False),
    ),
    max_body_bytes=MAX_BODY,
    max_small_request_bytes=4096,
    receive_wait_seconds=0.5,
    retry_after_seconds=RETRY_AFTER,
)


class Gated(accounts_pb2_grpc.AccountsServiceServicer):
    """Holds calls until `release`; counts who got in."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.inside = 0
        self._moved = asyncio.Condition()

    async def _enter(self) -> None:
        async with self._moved:
            self.inside += 1
            self._moved.notify_all()

    async def entered(self, count: int) -> None:
        async with self._moved:
            await asyncio.wait_for(self._moved.wait_for(lambda: self.inside >= count), 5)

    async def CreateUser(self, request: Any, context: Any) -> accounts_pb2.User:
        await self._enter()
        await self.gate.wait()
        return accounts_pb2.User(email=request.email, display_name=str(len(request.avatar_image)))

    async def GetUser(self, request: Any, context: Any) -> accounts_pb2.User:
        if request.id == "hold":
            await self._enter()
            await self.gate.wait()
        return accounts_pb2.User(id=request.id)

    async def UpdateThumbnails(self, request: Any, context: Any) -> accounts_pb2.User:
        return accounts_pb2.User(id=request.user_id)

    async def WatchUser(self, request: Any, context: Any) -> AsyncIterator[accounts_pb2.User]:
        await self._enter()
        yield accounts_pb2.User(id=request.id)
        await self.gate.wait()


@dataclass
class Served:
    addr: str
    stub: Any
    channel: grpc.aio.Channel
    health: Any
    guard: Guard
    servicer: Gated
    registry: CollectorRegistry

    def raw(self, method: str) -> Callable[..., Any]:
        """A caller of `method` that sends bytes as they are."""
        return self.channel.unary_unary(f"/{SERVICE}/{method}")

    def handled(self, method: str, code: str) -> float:
        labels = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": method}
        value = self.registry.get_sample_value(
            "grpc_server_handled_total", {**labels, "grpc_code": code}
        )
        return value or 0.0


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    registry = CollectorRegistry()
    guard = Guard(LIMITS)
    server = grpc.aio.server(
        interceptors=guard.around(RpcTelemetry(RpcMetrics(registry))),
        options=server_options(
            max_message_bytes=MAX_BODY,
            max_streams_per_connection=100,
            keepalive_seconds=30,
            keepalive_timeout_seconds=10,
        ),
    )
    servicer = Gated()
    accounts_pb2_grpc.add_AccountsServiceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 16 * 1024 * 1024)]
    )
    try:
        yield Served(
            f"127.0.0.1:{port}",
            accounts_pb2_grpc.AccountsServiceStub(channel),
            channel,
            health_pb2_grpc.HealthStub(channel),
            guard,
            servicer,
            registry,
        )
    finally:
        servicer.gate.set()
        await channel.close()
        await server.stop(None)


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def held(served: Served, count: int) -> list[asyncio.Task[Any]]:
    return [
        asyncio.ensure_future(served.stub.GetUser(accounts_pb2.GetUserRequest(id="hold")))
        for _ in range(count)
    ]


async def test_past_the_call_limit_resource_exhausted_with_retry_info_and_health_answers(
    served: Served,
) -> None:
    calls = held(served, 3)
    await served.servicer.entered(3)
    error = await refused(served.stub.GetUser(accounts_pb2.GetUserRequest(id="x"), timeout=5))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "3 calls in flight" in (error.details() or "")
    assert retry_delay(error) == RETRY_AFTER
    reply = await served.health.Check(health_pb2.HealthCheckRequest(), timeout=1)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert served.handled("GetUser", "RESOURCE_EXHAUSTED") == 1  # refusals are counted too

    served.servicer.gate.set()
    assert [r.id for r in await asyncio.gather(*calls)] == ["hold"] * 3
    await eventually(lambda: served.guard.rpcs.in_use == 0, 5, "slots given back")
    assert (await served.stub.GetUser(accounts_pb2.GetUserRequest(id="y"), timeout=5)).id == "y"


async def test_an_upload_past_its_cap_is_refused_before_its_body_is_read(served: Served) -> None:
    body = b"\xff" * (300 * 1024)

    def create(i: int) -> Any:
        request = accounts_pb2.CreateUserRequest(email=f"{i}@example.com", avatar_image=body)
        return served.stub.CreateUser(request, timeout=5)

    uploads = [asyncio.ensure_future(create(i)) for i in range(2)]
    await served.servicer.entered(2)
    held_bytes = served.guard.budget.held
    error = await refused(create(3))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "2 avatar uploads in flight" in (error.details() or "") and retry_delay(error)
    assert served.guard.budget.held == held_bytes  # nothing of the third body was taken in
    assert (await served.stub.GetUser(accounts_pb2.GetUserRequest(id="z"), timeout=1)).id == "z"
    served.servicer.gate.set()
    assert {u.display_name for u in await asyncio.gather(*uploads)} == {str(len(body))}


BIG = accounts_pb2.CreateUserRequest(email="a@example.com", avatar_image=b"\x01" * (600 * 1024))


async def test_an_upload_waits_for_room_in_the_byte_budget_then_is_refused_unread(
    served: Served,
) -> None:
    first = asyncio.ensure_future(served.stub.CreateUser(BIG, timeout=5))
    await served.servicer.entered(1)
    assert served.guard.budget.held == BIG.ByteSize()  # the most it might have been, given back
    # A second upload needs room for the largest request (MAX_BODY) before it is read.
    error = await refused(served.stub.CreateUser(BIG, timeout=5))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "1 MiB of requests in memory" in (error.details() or "") and retry_delay(error)
    assert served.guard.budget.held == BIG.ByteSize()
    served.servicer.gate.set()
    await first
    await eventually(lambda: served.guard.budget.held == 0, 5, "the budget given back")
    assert served.guard.rpcs.in_use == 0 and all(s.in_use == 0 for _, s in served.guard.caps)


async def test_an_upload_goes_in_once_the_budget_has_room_again(served: Served) -> None:
    first = asyncio.ensure_future(served.stub.CreateUser(BIG, timeout=5))
    await served.servicer.entered(1)
    second = asyncio.ensure_future(served.stub.CreateUser(BIG, timeout=5))
    await eventually(lambda: served.guard.waiting == 1, 5, "the second upload waiting")
    served.servicer.gate.set()  # the first ends, the second gets its room
    replies = await asyncio.gather(first, second)
    assert [r.display_name for r in replies] == [str(600 * 1024)] * 2
    await eventually(lambda: served.guard.budget.held == 0, 5, "the budget given back")


async def test_a_cancelled_call_gives_its_bytes_and_slots_back(served: Served) -> None:
    request = accounts_pb2.CreateUserRequest(email="c@example.com", avatar_image=b"\x02" * 1000)
    call = served.stub.CreateUser(request, timeout=5)
    await served.servicer.entered(1)
    assert served.guard.budget.held > 0
    call.cancel()
    await eventually(lambda: served.guard.budget.held == 0, 5, "the budget given back")
    await eventually(lambda: served.guard.rpcs.in_use == 0, 5, "the call slot given back")
    assert all(s.in_use == 0 for _, s in served.guard.caps)


async def test_watch_streams_have_their_own_cap_and_leave_calls_free(served: Served) -> None:
    streams = [served.stub.WatchUser(accounts_pb2.WatchUserRequest(id=str(i))) for i in range(2)]
    assert [(await s.read()).id for s in streams] == ["0", "1"]
    third = served.stub.WatchUser(accounts_pb2.WatchUserRequest(id="2"))
    error = await refused(third.read())
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "2 WatchUser streams in flight" in (error.details() or "") and retry_delay(error)
    calls = held(served, 3)  # streams do not count against the call limit
    await served.servicer.entered(5)
    served.servicer.gate.set()
    await asyncio.gather(*calls)
    for stream in streams:
        stream.cancel()
    await eventually(lambda: all(s.in_use == 0 for _, s in served.guard.caps), 5, "streams ended")


async def test_invalid_utf8_is_invalid_argument_naming_the_field_counted_no_traceback(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    email = b"\x0a\x04a\xff@b"  # field 1 (email), 4 bytes, not UTF-8
    error = await refused(served.raw("CreateUser")(email + b"\x1a\x02\xff\xd8", timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error) == [("email", "is not valid UTF-8")]
    reason = b"\x12\x03\xc3\x28x"  # failure.reason, with a broken two-byte sequence
    error = await refused(served.raw("UpdateThumbnails")(b"\x22\x05" + reason, timeout=5))
    assert violations(error) == [("failure.reason", "is not valid UTF-8")]
    assert served.handled("CreateUser", "INVALID_ARGUMENT") == 1
    assert served.handled("UpdateThumbnails", "INVALID_ARGUMENT") == 1
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert served.guard.budget.held == 0 and served.guard.rpcs.in_use == 0


async def test_a_malformed_message_is_invalid_argument(served: Served) -> None:
    error = await refused(served.raw("GetUser")(b"\x0a\x10cut short", timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error) == [("id", "is cut short")]
    error = await refused(served.raw("GetUser")(b"\xff", timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(error) == []
    assert served.handled("GetUser", "INVALID_ARGUMENT") == 2


async def test_a_large_request_to_a_small_method_is_refused_without_retry_info(
    served: Served,
) -> None:
    request = accounts_pb2.GetUserRequest(id="x" * 5000)
    error = await refused(served.stub.GetUser(request, timeout=5))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "4096 bytes this method takes" in (error.details() or "")
    assert retry_delay(error) is None  # the same request will never fit
    assert served.guard.budget.held == 0


async def test_a_message_over_the_receive_limit_is_counted_as_grpc_answered_it(
    served: Served,
) -> None:
    request = accounts_pb2.CreateUserRequest(avatar_image=b"\x03" * (MAX_BODY + 1))
    error = await refused(served.stub.CreateUser(request, timeout=10))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await eventually(lambda: served.handled("CreateUser", "RESOURCE_EXHAUSTED") == 1, 5, "counted")
    assert served.guard.budget.held == 0 and all(s.in_use == 0 for _, s in served.guard.caps)


async def test_the_cli_waits_the_delay_it_is_given_and_retries(served: Served) -> None:
    calls = held(served, 3)
    await served.servicer.entered(3)
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "accounts_service.cli", "--addr", served.addr, "get", "abc",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    assert cli.stderr is not None
    line = await asyncio.wait_for(cli.stderr.readline(), 30)
    assert b"server busy" in line and b"retrying in 0.25 s" in line
    served.servicer.gate.set()
    out, err = await asyncio.wait_for(cli.communicate(), 30)
    assert cli.returncode == 0, err
    assert b'id: "abc"' in out
    await asyncio.gather(*calls)


def violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found += [(v.field, v.description) for v in bad.field_violations]
    return found
