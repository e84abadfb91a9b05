"""Request-field checks of the accounts service (pure functions)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from accounts_service import validation
from accounts_service.errors import InvalidArgument

KEY = b"k" * 32


@pytest.mark.parametrize(
    "email",
    ["", "no-at-sign", "two@@example.com", "@example.com", "a@localhost", "a@example.",
     "a@.com", "a b@example.com", "x" * 250 + "@example.com"],
)  # fmt: skip
def test_bad_emails_are_named(email: str) -> None:
    fields = [f for f, _ in validation.new_user_violations(email, "Ada", "")]
    assert fields == ["email"]


def test_good_request_has_no_violations() -> None:
    assert validation.new_user_violations("Ada@Example.com", "Ada", "r" * 128) == []


def test_every_bad_field_is_reported_at_once() -> None:
    fields = [f for f, _ in validation.new_user_violations("bad", " ", "r" * 129)]
    assert fields == ["email", "display_name", "request_id"]


def test_display_name_limits() -> None:
    assert validation.new_user_violations("a@b.co", "x" * 100, "") == []
    assert validation.new_user_violations("a@b.co", "x" * 101, "")[0][0] == "display_name"


def test_page_size_defaults_and_caps() -> None:
    assert validation.page_size(0) == 50
    assert validation.page_size(5000) == 1000
    with pytest.raises(InvalidArgument):
        validation.page_size(-1)


def test_page_token_round_trip_and_forgery() -> None:
    when, uid = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), uuid.uuid4()
    token = validation.encode_page_token(KEY, when, uid)
    assert validation.decode_page_token(KEY, token) == (when, uid)
    for forged in [
        "",
        "garbage",
        token[:-4] + "AAAA",
        validation.encode_page_token(b"x", when, uid),
    ]:
        with pytest.raises(InvalidArgument) as err:
            validation.decode_page_token(KEY, forged)
        assert err.value.violations[0][0] == "page_token"


def test_ids_must_be_uuids() -> None:
    with pytest.raises(InvalidArgument) as err:
        validation.parse_id("42", "user_id")
    assert err.value.violations[0][0] == "user_id"


def test_request_fingerprint_tells_bodies_apart() -> None:
    a = validation.request_fingerprint("a@b.co", "A", b"img")
    assert a == validation.request_fingerprint("A@B.CO", "A", b"img")
    assert a != validation.request_fingerprint("a@b.co", "A", b"img2")


@pytest.mark.parametrize("bad", ["\x00", "a\nb", "\x7f", "tab\there"])
def test_control_characters_are_refused(bad: str) -> None:
    fields = [f for f, _ in validation.new_user_violations(f"a{bad}@example.com", bad, bad)]
    assert fields == ["email", "display_name", "request_id"]
