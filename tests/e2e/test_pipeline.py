"""The happy path through every hop: gRPC, PostgreSQL, outbox, JetStream, worker, S3, callback."""

from __future__ import annotations

import io
import urllib.request

import grpc
import pytest
from accounts.v1 import accounts_pb2
from minio import Minio
from PIL import Image

from devstack.s3 import S3Server
from tests.e2e.conftest import Service
from tests.e2e.support import (
    PENDING,
    READY,
    SIZES,
    create_user,
    image_bytes,
    png_image,
    wait_settled,
)


def test_jpeg_avatar_becomes_three_round_pngs(
    pipeline: tuple[Service, Service], accounts_stub, s3_server: S3Server, s3_bucket: str
) -> None:
    original = image_bytes("photo_grace_hopper_baseline_q88.jpg")
    created = create_user(accounts_stub, original, display_name="Grace")

    assert created.thumbnail_status == PENDING
    assert created.avatar.generation == 1
    assert created.avatar.object == f"avatars/{created.id}/1/original"
    for name, size in SIZES.items():
        placeholder = getattr(created.thumbnails, name)
        assert placeholder.object == created.avatar.object
        assert (placeholder.width, placeholder.height) == (size, size)
        with urllib.request.urlopen(placeholder.url, timeout=10) as resp:
            assert resp.read() == original

    user = wait_settled(accounts_stub, created.id)
    assert user.thumbnail_status == READY, user.failure_reason
    client: Minio = s3_server.client()
    for name, size in SIZES.items():
        thumb = getattr(user.thumbnails, name)
        key = f"thumbnails/{created.id}/1/{name}.png"
        assert thumb.object == key
        stat = client.stat_object(s3_bucket, key)
        assert stat.content_type == "image/png"
        assert thumb.size_bytes == stat.size
        data = client.get_object(s3_bucket, key).read()
        image = png_image(data, size)
        assert image.getchannel("A").getpixel((size // 2, size // 2)) == 255
        with urllib.request.urlopen(thumb.url, timeout=10) as resp:
            assert resp.read() == data


def test_get_and_list_users(pipeline: tuple[Service, Service], accounts_stub) -> None:
    ids = [create_user(accounts_stub, image_bytes("geom_64x64.png")).id for _ in range(3)]
    assert accounts_stub.GetUser(accounts_pb2.GetUserRequest(id=ids[0])).id == ids[0]

    seen: list[str] = []
    token = ""
    while True:
        page = accounts_stub.ListUsers(
            accounts_pb2.ListUsersRequest(page_size=2, page_token=token), timeout=10
        )
        assert len(page.users) <= 2
        seen += [u.id for u in page.users]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)), "a user appeared on two pages"
    positions = [seen.index(i) for i in ids]
    assert positions == sorted(positions), "not in creation order"


def test_unknown_and_malformed_ids(pipeline: tuple[Service, Service], accounts_stub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        accounts_stub.GetUser(accounts_pb2.GetUserRequest(id="not-a-uuid"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        accounts_stub.GetUser(
            accounts_pb2.GetUserRequest(id="6f1c2a57-0000-4000-8000-000000000000")
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_create_user_does_not_decode_pixels(
    pipeline: tuple[Service, Service], accounts_stub
) -> None:
    """A 12 MP JPEG whose pixel data is cut off is accepted from its header alone."""
    buf = io.BytesIO()
    Image.new("RGB", (4000, 3000), (200, 120, 40)).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    header_only = data[: len(data) // 3]
    created = create_user(accounts_stub, header_only)
    assert created.thumbnail_status == PENDING
    user = wait_settled(accounts_stub, created.id)
    assert user.failure_code == "TRUNCATED", user
    assert user.failure_reason
