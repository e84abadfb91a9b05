"""UpdateThumbnails is internal (bearer credential) and never lets an old generation win."""

from __future__ import annotations

import grpc
import pytest
from accounts.v1 import accounts_pb2

from tests.e2e.conftest import Service
from tests.e2e.support import READY, SIZES, create_user, image_bytes, wait_settled


def result_for(user_id: str, generation: int) -> accounts_pb2.UpdateThumbnailsRequest:
    request = accounts_pb2.UpdateThumbnailsRequest(user_id=user_id, avatar_generation=generation)
    for name, size in SIZES.items():
        getattr(request.thumbnails, name).CopyFrom(
            accounts_pb2.Thumbnail(
                object=f"thumbnails/{user_id}/{generation}/{name}.png",
                width=size,
                height=size,
                size_bytes=1234,
            )
        )
    return request


@pytest.mark.parametrize("metadata", [None, (("authorization", "Bearer wrong"),),
                                      (("authorization", "token"),)])  # fmt: skip
def test_update_thumbnails_without_the_credential_is_refused(
    pipeline: tuple[Service, Service], accounts_stub, metadata
) -> None:
    user = create_user(accounts_stub, image_bytes("geom_64x64.png"))
    with pytest.raises(grpc.RpcError) as err:
        accounts_stub.UpdateThumbnails(result_for(user.id, 1), metadata=metadata, timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    after = accounts_stub.GetUser(accounts_pb2.GetUserRequest(id=user.id))
    assert all(getattr(after.thumbnails, n).size_bytes != 1234 for n in SIZES)


def test_an_older_generation_never_overwrites_a_newer_one(
    pipeline: tuple[Service, Service], accounts_stub, internal_token: str
) -> None:
    auth = (("authorization", f"Bearer {internal_token}"),)
    user = create_user(accounts_stub, image_bytes("photo_chelsea.png"))
    assert wait_settled(accounts_stub, user.id).thumbnail_status == READY
    updated = accounts_stub.UpdateAvatar(
        accounts_pb2.UpdateAvatarRequest(
            id=user.id, avatar_image=image_bytes("photo_coffee_progressive_q80.jpg")
        ),
        timeout=30,
    )
    assert updated.avatar.generation == 2
    newest = wait_settled(accounts_stub, user.id)
    assert newest.thumbnail_status == READY
    assert newest.thumbnails.large.object == f"thumbnails/{user.id}/2/large.png"

    late = accounts_stub.UpdateThumbnails(result_for(user.id, 1), metadata=auth, timeout=10)
    assert late.avatar.generation == 2
    assert late.thumbnails.large.object == f"thumbnails/{user.id}/2/large.png"
    stale_failure = accounts_pb2.UpdateThumbnailsRequest(
        user_id=user.id,
        avatar_generation=1,
        failure=accounts_pb2.Failure(code="TRUNCATED", reason="late result"),
    )
    accounts_stub.UpdateThumbnails(stale_failure, metadata=auth, timeout=10)
    final = accounts_stub.GetUser(accounts_pb2.GetUserRequest(id=user.id))
    assert final.thumbnail_status == READY
    for name in SIZES:
        got, want = getattr(final.thumbnails, name), getattr(newest.thumbnails, name)
        assert (got.object, got.size_bytes) == (want.object, want.size_bytes)
