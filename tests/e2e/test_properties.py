"""Arbitrary field values at CreateUser, UpdateAvatar and ListUsers through a real channel.

Whatever comes in, the answer is a result or a refusal that names the problem (never INTERNAL
or UNKNOWN), and nothing is left half-written: a created or updated user has an event for each
of its avatar generations, and a refused call adds or changes no row.
(Only the users these tests touch are checked: other tests remove events on purpose.)
"""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from accounts.v1 import accounts_pb2, events_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import Service
from tests.e2e.support import bad_fields, create_user, image_bytes, query

REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.NOT_FOUND,
}
IMAGES = ["geom_1x1.png", "geom_64x64.png", "exif_orientation_6.jpg", "anim_cat.webp",
          "bad_plain_text.jpg", "bomb_gif_screen_30000x30000.gif"]  # fmt: skip
EXAMPLES = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _cut(image: bytes, cut: int, noise: bytes) -> bytes:
    return image[: max(0, len(image) - cut)] + noise


images = st.builds(
    _cut,
    st.sampled_from(IMAGES).map(image_bytes),
    st.one_of(st.just(0), st.integers(0, 10_000)),
    st.one_of(st.just(b""), st.binary(max_size=16)),
)
avatars = st.one_of(
    st.none(),
    st.binary(max_size=256).map(lambda b: ("avatar_image", b)),
    st.sampled_from(IMAGES[:4]).map(lambda name: ("avatar_image", image_bytes(name))),
    images.map(lambda b: ("avatar_image", b)),
    st.one_of(
        st.text(max_size=80),
        st.uuids().map(lambda u: f"uploads/{u}"),
        st.sampled_from(["avatars/x/1/original", "../etc/passwd", "uploads/", ""]),
    ).map(lambda key: ("avatar_object", key)),
)


# Characters that break naive code more often than a random code point does.
odd_characters = st.one_of(
    st.sampled_from(["\x00", "\n", "\x7f", "\u200b", "\ufeff", "@", ".", " ", "'", "%", "\\"]),
    st.characters(codec="utf-8"),
)


def _insert(text: str, char: str, at: int) -> str:
    return text[:at] + char + text[at:]


def near(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A valid value, or one with an arbitrary character put in somewhere: what gets past
    the first checks and reaches the database is where a crash would hide."""
    return st.one_of(valid, st.builds(_insert, valid, odd_characters, st.integers(0, 40)))


emails = st.one_of(
    st.text(max_size=300),
    st.emails(),
    near(st.uuids().map(lambda u: f"p-{u.hex[:12]}@Example.com")),
)
names = st.one_of(st.text(max_size=120), near(st.just("Ada Lovelace")))
request_ids = st.one_of(st.just(""), st.text(max_size=140), near(st.sampled_from(["r1", "r2"])))


def with_avatar(request: Any, avatar: tuple[str, Any] | None) -> Any:
    if avatar is not None:
        setattr(request, *avatar)
    return request


def refused(err: grpc.RpcError) -> None:
    assert err.code() in REFUSALS, (err.code(), err.details())
    if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
        assert bad_fields(err), "INVALID_ARGUMENT without field violations"


def users_with_email(database_url: str, email: str) -> int | None:
    if "\0" in email:
        return None  # no such row can exist: PostgreSQL text cannot hold NUL
    rows = query(database_url, "SELECT count(*) FROM users WHERE lower(email) = lower(%s)", email)
    return int(rows[0][0])


def generations(database_url: str, user_id: str) -> tuple[int, set[int]]:
    """The user's current generation and the generations its events ask for."""
    [(current,)] = query(database_url, "SELECT avatar_generation FROM users WHERE id = %s", user_id)
    asked = set()
    for (payload,) in query(database_url, "SELECT payload FROM outbox WHERE user_id = %s", user_id):
        asked.add(events_pb2.ThumbnailRequested.FromString(payload).avatar_generation)
    return int(current), asked


@pytest.fixture(scope="module")
def existing(pipeline: tuple[Service, Service], accounts_stub) -> list[str]:
    return [create_user(accounts_stub, image_bytes("geom_64x64.png")).id for _ in range(3)]


@EXAMPLES
@given(email=emails, display_name=names, avatar=avatars, request_id=request_ids)
def test_create_user_answers_or_refuses_and_never_half_writes(
    accounts_stub, database_url: str, email: str, display_name: str, avatar: Any, request_id: str
) -> None:
    before = users_with_email(database_url, email)
    request = accounts_pb2.CreateUserRequest(
        email=email, display_name=display_name, request_id=request_id
    )
    try:
        user = accounts_stub.CreateUser(with_avatar(request, avatar), timeout=30)
    except grpc.RpcError as err:
        refused(err)
        assert users_with_email(database_url, email) == before, "a refused call left a row"
    else:
        assert user.avatar.generation == 1
        assert generations(database_url, user.id) == (1, {1})


@EXAMPLES
@given(data=st.data(), avatar=avatars)
def test_update_avatar_answers_or_refuses_and_never_half_writes(
    accounts_stub, database_url: str, existing: list[str], data: st.DataObject, avatar: Any
) -> None:
    user_id = data.draw(
        st.one_of(st.sampled_from(existing), st.uuids().map(str), st.text(max_size=40))
    )
    known = user_id in existing
    before = generations(database_url, user_id) if known else None
    request = accounts_pb2.UpdateAvatarRequest(id=user_id)
    try:
        user = accounts_stub.UpdateAvatar(with_avatar(request, avatar), timeout=30)
    except grpc.RpcError as err:
        refused(err)
        if known:
            assert generations(database_url, user_id) == before, "a refused call changed a row"
    else:
        assert before is not None
        current, asked = generations(database_url, user_id)
        assert current == user.avatar.generation == before[0] + 1
        assert asked == before[1] | {current}, "the new generation has no event"


@pytest.fixture(scope="module")
def issued_token(existing: list[str], accounts_stub) -> str:
    page = accounts_stub.ListUsers(accounts_pb2.ListUsersRequest(page_size=1), timeout=10)
    assert page.next_page_token
    return str(page.next_page_token)


@EXAMPLES
@given(
    page_size=st.integers(-(2**31), 2**31 - 1),
    token=st.one_of(st.just(""), st.text(max_size=200), st.just("issued"), st.integers(0, 60)),
)
def test_list_users_answers_or_refuses(
    accounts_stub, issued_token: str, page_size: int, token: str | int
) -> None:
    if token == "issued":
        token = issued_token
    elif isinstance(token, int):  # one character of a real token changed
        i = token % len(issued_token)
        token = issued_token[:i] + ("A" if issued_token[i] != "A" else "B") + issued_token[i + 1 :]
    request = accounts_pb2.ListUsersRequest(page_size=page_size, page_token=token)
    try:
        page = accounts_stub.ListUsers(request, timeout=30)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
        assert set(bad_fields(err)) <= {"page_size", "page_token"}
    else:
        assert page_size >= 0
        assert len(page.users) <= min(page_size or 50, 1000)
        assert len({u.id for u in page.users}) == len(page.users)
        assert all(uuid.UUID(u.id) for u in page.users)
