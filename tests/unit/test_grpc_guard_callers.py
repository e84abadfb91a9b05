"""What the guard asks of the accounts code around it: the CLI honours RetryInfo (bounded), and
strings with NUL or other control characters are refused on their field before PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from uuid import uuid4

import grpc
import pytest
from google.rpc import code_pb2, status_pb2

from accounts_service import cli, validation
from accounts_service.errors import InvalidArgument
from accounts_service.results import checked_failure
from grpc_guard.status import DETAILS_KEY, resource_exhausted


class RefusedRpc(grpc.RpcError):
    """An error as a sync stub raises it, with the status in its trailing metadata."""

    def __init__(self, status: status_pb2.Status) -> None:
        self._status = status

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return ((DETAILS_KEY, self._status.SerializeToString()),)


def flaky(failures: list[status_pb2.Status]) -> tuple[list[float], object]:
    calls: list[float] = []

    def method(request: object, timeout: float) -> str:
        calls.append(timeout)
        if len(calls) <= len(failures):
            raise RefusedRpc(failures[len(calls) - 1])
        return f"reply to {request}"

    return calls, method


def test_the_cli_waits_as_asked_and_retries() -> None:
    calls, method = flaky([resource_exhausted("busy", 0.5), resource_exhausted("busy", 2.0)])
    slept: list[float] = []
    assert cli.with_retries(method, "req", 10, sleep=slept.append) == "reply to req"
    assert len(calls) == 3
    assert 0.5 <= slept[0] <= 0.6 and 2.0 <= slept[1] <= 2.4  # the delay plus some jitter


def test_the_cli_gives_up_after_its_retries() -> None:
    calls, method = flaky([resource_exhausted("busy", 0.1)] * (cli.MAX_RETRIES + 1))
    slept: list[float] = []
    with pytest.raises(RefusedRpc):
        cli.with_retries(method, "req", 10, sleep=slept.append)
    assert len(calls) == cli.MAX_RETRIES + 1 and len(slept) == cli.MAX_RETRIES


def test_the_cli_does_not_retry_without_retry_info() -> None:
    down = status_pb2.Status(code=code_pb2.UNAVAILABLE, message="down")
    calls, method = flaky([down])
    with pytest.raises(RefusedRpc):
        cli.with_retries(method, "req", 10, sleep=pytest.fail)
    assert len(calls) == 1


def test_a_wait_past_the_deadline_is_not_made() -> None:
    error = RefusedRpc(resource_exhausted("busy", 5.0))
    assert not cli.busy_wait(error, 0, deadline=time.monotonic() + 1, sleep=pytest.fail)


@pytest.mark.parametrize("bad", ["\x00", "a\x00b", "new\nline", "\t", "\x1b[31m", "\x7f", "\x85"])
def test_control_characters_are_refused_on_their_field(bad: str) -> None:
    fields = dict(validation.new_user_violations(f"a{bad}@example.com", f"Name{bad}", f"r{bad}"))
    assert set(fields) == {"email", "display_name", "request_id"}
    with pytest.raises(InvalidArgument) as caught:
        validation.decode_page_token(b"key", f"dG9rZW4{bad}")
    assert caught.value.violations[0][0] == "page_token"
    with pytest.raises(InvalidArgument) as caught:
        validation.parse_id(f"6f1c2a57-0000-4000-8000-00000000000{bad}")
    assert caught.value.violations[0][0] == "id"
    with pytest.raises(InvalidArgument) as caught:
        checked_failure("TRUNCATED", f"cut{bad}short")
    assert caught.value.violations == [("failure.reason", "must not contain control characters")]
    with pytest.raises(InvalidArgument) as caught:
        checked_failure(f"TRUNCATED{bad}", "reason")
    assert caught.value.violations[0][0] == "failure.code"


def test_an_id_padded_with_whitespace_is_not_read_as_another_uuid() -> None:
    for padded in (" 6f1c2a57-0000-4000-8000-000000000001", "6f1c2a57-0000-4000-8000-00000000000 "):
        with pytest.raises(InvalidArgument):
            validation.parse_id(padded)


def test_a_page_token_with_a_control_character_is_refused_even_if_the_rest_is_valid() -> None:
    token = validation.encode_page_token(b"key", datetime.now(UTC), uuid4())
    validation.decode_page_token(b"key", token)
    with pytest.raises(InvalidArgument):
        validation.decode_page_token(b"key", token[:4] + "\x00" + token[4:])


def test_too_complex_is_a_failure_code_imaging_may_report() -> None:
    assert checked_failure("TOO_COMPLEX", "4000 JPEG segments before the first frame") == (
        "TOO_COMPLEX",
        "4000 JPEG segments before the first frame",
    )
