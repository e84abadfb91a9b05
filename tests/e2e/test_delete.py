"""DeleteUser: the row at once, every object soon after, and later events change nothing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import grpc
import nats
import pytest
from accounts.v1 import accounts_pb2, events_pb2
from minio import Minio

from devstack.nats import NatsServer
from devstack.net import wait_until
from devstack.s3 import S3Server
from tests.e2e.conftest import Service
from tests.e2e.support import (
    READY,
    consumer_info,
    create_user,
    image_bytes,
    user_keys,
    wait_settled,
)

CLEANUP_WITHIN = 30.0  # the contract: objects are gone within 30 s of DeleteUser


def delete(stub, user_id: str) -> None:
    stub.DeleteUser(accounts_pb2.DeleteUserRequest(id=user_id), timeout=10)


def publish(nats_url: str, event: events_pb2.ThumbnailRequested) -> int:
    """Publishes as the outbox relay does; returns the stream sequence."""

    async def send() -> int:
        nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            ack = await nc.jetstream().publish(
                "accounts.thumbnail.requested",
                event.SerializeToString(),
                headers={"Nats-Msg-Id": event.event_id},
                timeout=5,
            )
            return int(ack.seq)
        finally:
            await nc.close()

    return asyncio.run(send())


def wait_consumed(nats_url: str, seq: int) -> None:
    """Until the imaging consumer has acknowledged every message up to `seq`."""

    def done() -> bool:
        info = consumer_info(nats_url)
        return info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= seq

    wait_until(done, 60, f"imaging acknowledging stream message {seq}")


def test_delete_removes_the_row_at_once_and_every_object_soon(
    pipeline: tuple[Service, Service], accounts_stub, s3_server: S3Server, s3_bucket: str
) -> None:
    client: Minio = s3_server.client()
    user = create_user(accounts_stub, image_bytes("photo_chelsea.png"))
    assert wait_settled(accounts_stub, user.id).thumbnail_status == READY
    accounts_stub.UpdateAvatar(
        accounts_pb2.UpdateAvatarRequest(id=user.id, avatar_image=image_bytes("geom_64x64.png")),
        timeout=30,
    )
    assert wait_settled(accounts_stub, user.id).thumbnail_status == READY
    assert len(user_keys(client, s3_bucket, user.id)) >= 4

    delete(accounts_stub, user.id)
    with pytest.raises(grpc.RpcError) as err:
        accounts_stub.GetUser(accounts_pb2.GetUserRequest(id=user.id), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    wait_until(lambda: not user_keys(client, s3_bucket, user.id), CLEANUP_WITHIN, "objects removed")
    with pytest.raises(grpc.RpcError) as err:
        delete(accounts_stub, user.id)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # The email is free again.
    create_user(accounts_stub, image_bytes("geom_64x64.png"), email=user.email)


def test_a_later_event_for_a_deleted_user_changes_nothing(
    pipeline: tuple[Service, Service],
    accounts_stub,
    nats_server: NatsServer,
    s3_server: S3Server,
    s3_bucket: str,
) -> None:
    client: Minio = s3_server.client()
    user = create_user(accounts_stub, image_bytes("geom_64x64.png"))
    assert wait_settled(accounts_stub, user.id).thumbnail_status == READY
    delete(accounts_stub, user.id)
    wait_until(lambda: not user_keys(client, s3_bucket, user.id), CLEANUP_WITHIN, "objects removed")
    late = events_pb2.ThumbnailRequested(
        event_id=str(uuid.uuid4()),
        user_id=user.id,
        avatar_object=user.avatar.object,
        avatar_generation=1,
    )
    late.requested_time.FromDatetime(datetime.now(UTC))
    wait_consumed(nats_server.url, publish(nats_server.url, late))
    assert user_keys(client, s3_bucket, user.id) == []
    with pytest.raises(grpc.RpcError) as err:
        accounts_stub.GetUser(accounts_pb2.GetUserRequest(id=user.id), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_deleting_a_user_whose_thumbnails_are_being_made_leaves_nothing_behind(
    pipeline: tuple[Service, Service],
    accounts_stub,
    nats_server: NatsServer,
    s3_server: S3Server,
    s3_bucket: str,
) -> None:
    """Deleted right after CreateUser: its event is dropped from the outbox, or the worker
    finds the user gone (and takes back any thumbnail it wrote)."""
    client: Minio = s3_server.client()
    users = [
        create_user(accounts_stub, image_bytes("photo_large_2000x1500_q85.jpg")) for _ in range(3)
    ]
    for user in users:
        delete(accounts_stub, user.id)
    # A marker event after theirs: once it is acknowledged, theirs were handled too.
    marker = create_user(accounts_stub, image_bytes("geom_64x64.png"))
    assert wait_settled(accounts_stub, marker.id).thumbnail_status == READY
    info = consumer_info(nats_server.url)
    wait_consumed(nats_server.url, info.delivered.stream_seq or 0)
    for user in users:
        wait_until(
            lambda u=user: not user_keys(client, s3_bucket, u.id),
            CLEANUP_WITHIN,
            f"objects of {user.id} removed",
        )
