"""Faults that must lose nothing: NATS down during CreateUser, a worker killed mid-job."""

from __future__ import annotations

from accounts.v1 import accounts_pb2

from devstack.nats import NatsServer
from devstack.net import wait_until
from tests.e2e.conftest import Service
from tests.e2e.faults import consumer_info
from tests.e2e.support import PENDING, READY, create_user, image_bytes, wait_settled


def test_create_user_while_nats_is_down_reaches_ready_once_it_is_back(
    pipeline: tuple[Service, Service], accounts_stub, nats_server: NatsServer
) -> None:
    nats_server.stop()
    try:
        created = create_user(accounts_stub, image_bytes("photo_coffee_progressive_q80.jpg"))
        assert created.thumbnail_status == PENDING
    finally:
        nats_server.start()
    user = wait_settled(accounts_stub, created.id, timeout=90)
    assert user.thumbnail_status == READY, user.failure_reason


def test_worker_killed_while_holding_a_message_redelivers_after_restart(
    pipeline: tuple[Service, Service], accounts_stub, nats_server: NatsServer
) -> None:
    _, imaging = pipeline
    before = consumer_info(nats_server.url)
    # The 50 MP PNG takes seconds to render: long enough to kill the worker mid-job.
    created = create_user(accounts_stub, image_bytes("geom_exactly_50mp_10000x5000.png"))
    wait_until(
        lambda: consumer_info(nats_server.url).num_ack_pending >= 1,
        30,
        "the worker holding the message",
    )
    imaging.process.kill()
    held = consumer_info(nats_server.url)
    assert accounts_stub_status(accounts_stub, created.id) == PENDING, "acked before callback"
    assert held.num_ack_pending >= 1, "message acked although the job never finished"

    imaging.start()
    user = wait_settled(accounts_stub, created.id, timeout=120)
    assert user.thumbnail_status == READY, user.failure_reason
    after = consumer_info(nats_server.url)
    assert after.num_redelivered > before.num_redelivered or after.delivered.consumer_seq > (
        held.delivered.consumer_seq
    ), "the message was not delivered again"


def accounts_stub_status(stub, user_id: str) -> int:
    return int(stub.GetUser(accounts_pb2.GetUserRequest(id=user_id), timeout=5).thumbnail_status)
