"""Large avatars go straight to storage with a presigned PUT, then CreateUser adopts the object."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from accounts.v1 import accounts_pb2, accounts_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from devstack.net import free_port
from tests.e2e.conftest import Service
from tests.e2e.support import FAILED, PENDING, READY, image_bytes, unique_email, wait_settled
from tests.hostile import HOSTILE, MIB


def upload(stub, data: bytes, content_type: str = "image/jpeg") -> str:
    issued = stub.CreateAvatarUpload(
        accounts_pb2.CreateAvatarUploadRequest(content_type=content_type, content_length=len(data)),
        timeout=10,
    )
    assert issued.object.startswith("uploads/")
    put = urllib.request.Request(
        issued.upload_url, data=data, method="PUT", headers={"Content-Type": content_type}
    )
    with urllib.request.urlopen(put, timeout=30) as resp:
        assert resp.status == 200
    return str(issued.object)


def create_from(stub, obj: str) -> accounts_pb2.User:
    return stub.CreateUser(
        accounts_pb2.CreateUserRequest(
            email=unique_email(), display_name="Uploader", avatar_object=obj
        ),
        timeout=30,
    )


def violation_fields(err: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(err)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details)
    return [v.field for v in bad.field_violations]


def test_presigned_upload_then_create_user_reaches_ready(
    pipeline: tuple[Service, Service], accounts_stub
) -> None:
    obj = upload(accounts_stub, image_bytes("photo_large_2000x1500_q85.jpg"))
    user = create_from(accounts_stub, obj)
    assert user.avatar.object == f"avatars/{user.id}/1/original"
    assert wait_settled(accounts_stub, user.id).thumbnail_status == READY


def test_a_crafted_upload_past_what_its_head_shows_ends_failed(
    pipeline: tuple[Service, Service], accounts_stub
) -> None:
    """CreateUser checks an upload from its first 64 KiB: a GIF whose header passes takes
    3,001 frames to be refused, which the renderer's pre-scan of the whole file finds."""
    frames = next(h for h in HOSTILE if h.name == "gif_many_frames").build(MIB)
    user = create_from(accounts_stub, upload(accounts_stub, frames, "image/gif"))
    assert user.thumbnail_status == PENDING
    settled = wait_settled(accounts_stub, user.id)
    assert (settled.thumbnail_status, settled.failure_code) == (FAILED, "TOO_COMPLEX"), settled


def test_an_upload_can_be_used_once(pipeline: tuple[Service, Service], accounts_stub) -> None:
    obj = upload(accounts_stub, image_bytes("geom_64x64.png"), "image/png")
    create_from(accounts_stub, obj)
    with pytest.raises(grpc.RpcError) as err:
        create_from(accounts_stub, obj)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(err.value) == ["avatar_object"]


@pytest.mark.parametrize(
    "key", ["avatars/someone-else/1/original", "uploads/never-issued", "../etc/passwd", ""]
)
def test_a_key_we_did_not_issue_is_refused(
    pipeline: tuple[Service, Service], accounts_stub, key: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        create_from(accounts_stub, key)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(err.value) == ["avatar_object"]


def test_an_issued_upload_that_never_arrived_is_source_missing(
    pipeline: tuple[Service, Service], accounts_stub
) -> None:
    issued = accounts_stub.CreateAvatarUpload(
        accounts_pb2.CreateAvatarUploadRequest(content_type="image/png", content_length=100)
    )
    with pytest.raises(grpc.RpcError) as err:
        create_from(accounts_stub, issued.object)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "SOURCE_MISSING" in str(rpc_status.from_call(err.value))


def put(url: str, data: bytes, content_type: str) -> int:
    request = urllib.request.Request(
        url, data=data, method="PUT", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_storage_refuses_an_upload_of_another_length_or_type(
    pipeline: tuple[Service, Service], accounts_stub
) -> None:
    """Content-Type and Content-Length are signed into the URL: the limit holds at storage."""
    data = image_bytes("geom_64x64.png")
    issued = accounts_stub.CreateAvatarUpload(
        accounts_pb2.CreateAvatarUploadRequest(content_type="image/png", content_length=len(data)),
        timeout=10,
    )
    assert put(issued.upload_url, data + b"\0" * 1024, "image/png") == 403
    assert put(issued.upload_url, data[:-1], "image/png") == 403
    assert put(issued.upload_url, data, "image/jpeg") == 403
    with pytest.raises(grpc.RpcError) as err:
        create_from(accounts_stub, issued.object)
    assert "SOURCE_MISSING" in str(rpc_status.from_call(err.value))
    assert put(issued.upload_url, data, "image/png") == 200
    user = create_from(accounts_stub, issued.object)
    assert wait_settled(accounts_stub, user.id).thumbnail_status == READY


def test_create_avatar_upload_names_every_bad_field(accounts_stub) -> None:
    for request, fields in [
        (accounts_pb2.CreateAvatarUploadRequest(content_type="text/plain"),
         ["content_type", "content_length"]),
        (accounts_pb2.CreateAvatarUploadRequest(content_type="image/png",
                                                content_length=20 * 1024 * 1024 + 1),
         ["content_length"]),
    ]:  # fmt: skip
        with pytest.raises(grpc.RpcError) as err:
            accounts_stub.CreateAvatarUpload(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violation_fields(err.value) == fields


def test_update_avatar_from_an_upload(pipeline: tuple[Service, Service], accounts_stub) -> None:
    user = create_from(accounts_stub, upload(accounts_stub, image_bytes("geom_64x64.png"),
                                             "image/png"))  # fmt: skip
    obj = upload(accounts_stub, image_bytes("photo_coffee_progressive_q80.jpg"))
    updated = accounts_stub.UpdateAvatar(
        accounts_pb2.UpdateAvatarRequest(id=user.id, avatar_object=obj), timeout=30
    )
    assert (updated.avatar.generation, updated.avatar.content_type) == (2, "image/jpeg")
    assert updated.avatar.object == f"avatars/{user.id}/2/original"
    ready = wait_settled(accounts_stub, user.id)
    assert (ready.thumbnail_status, ready.avatar.generation) == (READY, 2)


@pytest.fixture
def rationed(service_env: dict[str, str], tmp_path: Path) -> Iterator[Service]:
    """An accounts process that issues 3 uploads at once, then one every 100 s."""
    port = free_port()
    env = service_env | {
        "ACCOUNTS_PORT": str(port),
        "UPLOAD_BURST": "3",
        "UPLOADS_PER_SECOND": "0.01",
    }
    service = Service("accounts-rationed", "accounts_service", port, env, tmp_path / "a.log")
    service.start()
    yield service
    service.process.terminate(30)


def test_create_avatar_upload_is_refused_past_its_rate_with_retry_info(
    rationed: Service,
) -> None:
    request = accounts_pb2.CreateAvatarUploadRequest(content_type="image/png", content_length=100)
    with grpc.insecure_channel(rationed.addr) as channel:
        stub = accounts_pb2_grpc.AccountsServiceStub(channel)
        issued = [stub.CreateAvatarUpload(request, timeout=10) for _ in range(3)]
        assert len({i.object for i in issued}) == 3
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateAvatarUpload(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(err.value)
    info = error_details_pb2.RetryInfo()
    assert status is not None and any(d.Unpack(info) for d in status.details)
    assert 0 < info.retry_delay.ToTimedelta().total_seconds() <= 100
