"""Every AccountsService RPC through a real channel, with each error's status code and fields."""

from __future__ import annotations

import threading

import grpc
import psycopg
import pytest
from accounts.v1 import accounts_pb2
from minio import Minio

from devstack.net import wait_until
from devstack.s3 import S3Server
from tests.e2e.conftest import Service
from tests.e2e.support import (
    FAILED,
    PENDING,
    READY,
    bad_fields,
    create_user,
    error_reason,
    image_bytes,
    log_records,
    matching,
    object_keys,
    query,
    unique_email,
    wait_settled,
)

UNKNOWN_ID = "6f1c2a57-0000-4000-8000-000000000000"
MiB = 1024 * 1024


def events_of(database_url: str, user_id: str) -> int:
    return int(query(database_url, "SELECT count(*) FROM outbox WHERE user_id = %s", user_id)[0][0])


def test_create_user_names_every_bad_field_at_once(accounts_stub) -> None:
    request = accounts_pb2.CreateUserRequest(
        email="not-an-email", display_name="", request_id="r" * 129
    )
    with pytest.raises(grpc.RpcError) as err:
        accounts_stub.CreateUser(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(err.value) == ["email", "display_name", "request_id", "avatar_image"]


def test_a_refused_avatar_carries_its_failure_code(accounts_stub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        create_user(accounts_stub, image_bytes("bad_plain_text.jpg"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(err.value) == ["avatar_image"]
    assert error_reason(err.value) == "NOT_AN_IMAGE"


def test_a_taken_email_is_already_exists_whatever_its_case(accounts_stub) -> None:
    email = unique_email("Case")
    create_user(accounts_stub, image_bytes("geom_64x64.png"), email=email)
    with pytest.raises(grpc.RpcError) as err:
        create_user(accounts_stub, image_bytes("geom_64x64.png"), email=email.upper())
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_avatar_over_its_limit_is_too_large_and_a_message_over_the_grpc_limit_is_exhausted(
    accounts_stub,
) -> None:
    """Avatar limit 20 MiB (INVALID_ARGUMENT, TOO_LARGE) < MAX_MESSAGE_BYTES 32 MiB."""
    with pytest.raises(grpc.RpcError) as err:
        create_user(accounts_stub, b"\xff\xd8\xff" + bytes(20 * MiB))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err.value) == "TOO_LARGE"
    with pytest.raises(grpc.RpcError) as err:
        create_user(accounts_stub, b"\xff\xd8\xff" + bytes(33 * MiB))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_request_id_makes_create_user_idempotent(accounts_stub, database_url: str) -> None:
    image = image_bytes("geom_64x64.png")
    email, request_id = unique_email("retry"), f"req-{unique_email()}"
    first = create_user(accounts_stub, image, email=email, request_id=request_id)
    again = create_user(accounts_stub, image, email=email, request_id=request_id)
    assert again.id == first.id
    assert again.avatar.object == first.avatar.object
    assert events_of(database_url, first.id) == 1, "a repeat published a second event"
    with pytest.raises(grpc.RpcError) as err:
        create_user(accounts_stub, image, email=email, request_id=request_id, display_name="B")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(err.value) == ["request_id"]


def test_update_avatar_makes_a_new_generation_and_drops_the_old_one_after_the_grace(
    pipeline: tuple[Service, Service],
    accounts_stub,
    database_url: str,
    s3_server: S3Server,
    s3_bucket: str,
) -> None:
    """OLD_GENERATION_GRACE_SECONDS is 2 in these tests."""
    client: Minio = s3_server.client()
    user = create_user(accounts_stub, image_bytes("photo_chelsea.png"))
    assert wait_settled(accounts_stub, user.id).thumbnail_status == READY
    updated = accounts_stub.UpdateAvatar(
        accounts_pb2.UpdateAvatarRequest(
            id=user.id, avatar_image=image_bytes("photo_coffee_progressive_q80.jpg")
        ),
        timeout=30,
    )
    assert (updated.avatar.generation, updated.thumbnail_status) == (2, PENDING)
    assert updated.avatar.object == f"avatars/{user.id}/2/original"
    assert updated.avatar.content_type == "image/jpeg"
    assert events_of(database_url, user.id) == 2
    ready = wait_settled(accounts_stub, user.id)
    assert ready.thumbnail_status == READY
    assert ready.thumbnails.small.object == f"thumbnails/{user.id}/2/small.png"

    def first_generation_gone() -> bool:
        return not object_keys(client, s3_bucket, f"avatars/{user.id}/1/") + object_keys(
            client, s3_bucket, f"thumbnails/{user.id}/1/"
        )

    wait_until(first_generation_gone, 30, "generation 1 objects removed")
    assert sorted(object_keys(client, s3_bucket, f"thumbnails/{user.id}/2/")) == [
        f"thumbnails/{user.id}/2/{n}.png" for n in ("large", "medium", "small")
    ]
    assert object_keys(client, s3_bucket, f"avatars/{user.id}/2/") == [updated.avatar.object]


def test_update_avatar_refusals_leave_the_user_as_it_was(accounts_stub) -> None:
    user = create_user(accounts_stub, image_bytes("geom_64x64.png"))
    with pytest.raises(grpc.RpcError) as err:
        accounts_stub.UpdateAvatar(
            accounts_pb2.UpdateAvatarRequest(id=user.id, avatar_image=b"plain text"), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (bad_fields(err.value), error_reason(err.value)) == (["avatar_image"], "NOT_AN_IMAGE")
    with pytest.raises(grpc.RpcError) as err:
        accounts_stub.UpdateAvatar(accounts_pb2.UpdateAvatarRequest(id="nope"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(err.value) == ["id", "avatar_image"]
    with pytest.raises(grpc.RpcError) as err:
        accounts_stub.UpdateAvatar(
            accounts_pb2.UpdateAvatarRequest(id=user.id, avatar_object="uploads/never-issued"),
            timeout=10,
        )
    assert bad_fields(err.value) == ["avatar_object"]
    after = accounts_stub.GetUser(accounts_pb2.GetUserRequest(id=user.id), timeout=10)
    assert after.avatar.generation == 1


def test_regenerate_thumbnails_works_after_failed_and_after_ready(
    pipeline: tuple[Service, Service], accounts_stub, database_url: str
) -> None:
    broken = create_user(accounts_stub, image_bytes("bad_truncated_50pct.jpg"))
    assert wait_settled(accounts_stub, broken.id).thumbnail_status == FAILED
    again = accounts_stub.RegenerateThumbnails(
        accounts_pb2.RegenerateThumbnailsRequest(id=broken.id), timeout=10
    )
    assert (again.thumbnail_status, again.failure_code) == (PENDING, "")
    assert events_of(database_url, broken.id) == 2
    assert wait_settled(accounts_stub, broken.id).failure_code == "TRUNCATED"

    good = create_user(accounts_stub, image_bytes("geom_64x64.png"))
    assert wait_settled(accounts_stub, good.id).thumbnail_status == READY
    again = accounts_stub.RegenerateThumbnails(
        accounts_pb2.RegenerateThumbnailsRequest(id=good.id), timeout=10
    )
    assert (again.thumbnail_status, again.avatar.generation) == (PENDING, 1)
    assert wait_settled(accounts_stub, good.id).thumbnail_status == READY


def _call(stub, method: str, user_id: str) -> None:
    if method == "WatchUser":
        next(stub.WatchUser(accounts_pb2.WatchUserRequest(id=user_id), timeout=10))
        return
    request = {
        "GetUser": accounts_pb2.GetUserRequest(id=user_id),
        "UpdateAvatar": accounts_pb2.UpdateAvatarRequest(
            id=user_id, avatar_image=image_bytes("geom_64x64.png")
        ),
        "RegenerateThumbnails": accounts_pb2.RegenerateThumbnailsRequest(id=user_id),
        "DeleteUser": accounts_pb2.DeleteUserRequest(id=user_id),
    }[method]
    getattr(stub, method)(request, timeout=10)


@pytest.mark.parametrize(
    "method", ["GetUser", "UpdateAvatar", "RegenerateThumbnails", "DeleteUser", "WatchUser"]
)
def test_every_rpc_by_id_refuses_malformed_and_unknown_ids(accounts_stub, method: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _call(accounts_stub, method, "not-a-uuid")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(err.value)[0] == "id"
    with pytest.raises(grpc.RpcError) as err:
        _call(accounts_stub, method, UNKNOWN_ID)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_list_users_refuses_a_negative_page_size_and_tokens_it_did_not_issue(
    accounts_stub,
) -> None:
    for request, field in [
        (accounts_pb2.ListUsersRequest(page_size=-1), "page_size"),
        (accounts_pb2.ListUsersRequest(page_token="bm90LWEtdG9rZW4="), "page_token"),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            accounts_stub.ListUsers(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(err.value) == [field]
    create_user(accounts_stub, image_bytes("geom_64x64.png"))
    page = accounts_stub.ListUsers(accounts_pb2.ListUsersRequest(page_size=100000), timeout=10)
    assert 0 < len(page.users) <= 1000


def test_a_call_past_its_deadline_is_cancelled_and_does_nothing_more(
    pipeline: tuple[Service, Service], accounts_stub, database_url: str
) -> None:
    """The users table is locked, so CreateUser waits in its first query when its 1 s deadline
    passes; the server cancels it there, and once the lock is gone nothing more happens."""
    accounts, _ = pipeline
    email = unique_email("deadline")
    seen = len(log_records(accounts.process.log_text()))

    def cancelled() -> bool:
        new = log_records(accounts.process.log_text())[seen:]
        return bool(matching(new, msg="call cancelled", method="CreateUser"))

    with psycopg.connect(database_url) as blocker:
        blocker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        request = accounts_pb2.CreateUserRequest(
            email=email, display_name="Late", avatar_image=image_bytes("geom_64x64.png")
        )
        with pytest.raises(grpc.RpcError) as err:
            accounts_stub.CreateUser(request, timeout=1.0)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_until(cancelled, 10, "the server cancelling CreateUser")
        blocker.rollback()
    # The cancelled call is over, so the email is still free: a new call can take it.
    created = create_user(accounts_stub, image_bytes("geom_64x64.png"), email=email)
    assert query(database_url, "SELECT id::text FROM users WHERE email = %s", email) == [
        (created.id,)
    ]


def test_concurrent_retries_with_one_request_id_make_one_user(
    accounts_stub, database_url: str
) -> None:
    image = image_bytes("geom_64x64.png")
    email, request_id = unique_email("race"), f"race-{unique_email()}"
    results: list[str] = []

    def attempt() -> None:
        results.append(create_user(accounts_stub, image, email=email, request_id=request_id).id)

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and len(set(results)) == 1
    assert events_of(database_url, results[0]) == 1
