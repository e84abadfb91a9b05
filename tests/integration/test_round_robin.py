"""The services' clients spread calls over every address of their target: the imaging
service's channel to accounts (imaging_service.tls.channel, which AccountsClient uses) and
the CLI's. Two health servers on port 0, one SERVING and one NOT_SERVING, tell apart which
replica answered; grpc's default policy (pick_first) would send every call to the first."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from accounts_service.cli import _stub
from imaging_service.tls import channel

ATTEMPTS = 200  # calls until both replicas have answered; pick_first: all go to one
SERVING, NOT_SERVING = (
    health_pb2.HealthCheckResponse.SERVING,
    health_pb2.HealthCheckResponse.NOT_SERVING,
)


@pytest.fixture
async def two_replicas() -> AsyncIterator[str]:
    """A target naming both servers: `ipv4:127.0.0.1:A,127.0.0.1:B`."""
    servers, ports = [], []
    for status in (SERVING, NOT_SERVING):
        server = grpc.aio.server()
        servicer = health.aio.HealthServicer()
        await servicer.set("", status)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        servers.append(server)
    try:
        yield "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)
    finally:
        for server in servers:
            await server.stop(None)


async def test_the_channel_to_accounts_spreads_calls_over_the_replicas(two_replicas: str) -> None:
    answered: set[int] = set()
    async with channel(two_replicas, None) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for _ in range(ATTEMPTS):
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            answered.add(reply.status)
            if len(answered) == 2:
                break
    assert answered == {SERVING, NOT_SERVING}


async def test_the_cli_spreads_calls_over_the_replicas(two_replicas: str) -> None:
    ch, _ = _stub(argparse.Namespace(addr=two_replicas, ca=None, cert=None, key=None))
    answered: set[int] = set()
    try:
        stub = health_pb2_grpc.HealthStub(ch)
        for _ in range(ATTEMPTS):
            # The servers run on this test's event loop: the blocking call goes to a thread.
            reply = await asyncio.to_thread(stub.Check, health_pb2.HealthCheckRequest(), timeout=5)
            answered.add(reply.status)
            if len(answered) == 2:
                break
    finally:
        ch.close()
    assert answered == {SERVING, NOT_SERVING}
