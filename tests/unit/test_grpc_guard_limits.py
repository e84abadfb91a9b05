"""In-flight accounting of the guard (slots, byte budget, caps) and the statuses it answers with."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from grpc_guard.handlers import Verdict
from grpc_guard.limits import ByteBudget, Slots
from grpc_guard.server import Cap, Guard, Limits
from grpc_guard.status import (
    DETAILS_KEY,
    MAX_RETRY_DELAY_SECONDS,
    invalid_argument,
    resource_exhausted,
    retry_delay,
    too_large,
)

UPLOAD = "/accounts.v1.AccountsService/CreateUser"
WATCH = "/accounts.v1.AccountsService/WatchUser"
GET = "/accounts.v1.AccountsService/GetUser"


def test_slots_say_no_past_the_limit_and_count_what_is_given_back() -> None:
    slots = Slots("calls", 2)
    assert slots.take() and slots.take()
    assert not slots.take()
    slots.give_back()
    assert slots.in_use == 1 and slots.take()
    with pytest.raises(ValueError, match="calls"):
        Slots("calls", 0)


def test_giving_back_more_than_was_taken_is_a_bug_that_shows() -> None:
    slots = Slots("calls", 1)
    with pytest.raises(RuntimeError, match="never taken"):
        slots.give_back()


def test_a_reservation_that_would_pass_the_budget_is_refused_whole() -> None:
    budget = ByteBudget(100)
    first = budget.reserve(60)
    assert first is not None and budget.held == 60
    assert budget.reserve(41) is None and budget.held == 60
    second = budget.reserve(40)
    assert second is not None and budget.held == 100
    assert budget.reserve(0) is not None  # an empty request always fits


def test_a_reservation_for_the_most_a_request_may_be_shrinks_to_its_size() -> None:
    budget = ByteBudget(100)
    reservation = budget.reserve(80)
    assert reservation is not None and reservation.resize(30) and budget.held == 30
    assert budget.reserve(70) is not None and budget.held == 100
    assert not reservation.resize(31) and reservation.size == 30 and budget.held == 100


def test_the_budget_must_fit_the_largest_request() -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        Guard(Limits(max_concurrent_rpcs=1, max_request_bytes=100, max_body_bytes=101))


def test_a_reservation_is_given_back_once_however_often_it_is_released() -> None:
    budget = ByteBudget(100)
    reservation = budget.reserve(70)
    assert reservation is not None
    reservation.release()
    reservation.release()
    assert budget.held == 0
    assert budget.reserve(100) is not None


def guard(**overrides: object) -> Guard:
    limits = Limits(
        max_concurrent_rpcs=2,
        max_request_bytes=1000,
        caps=(
            Cap("avatar uploads", frozenset({UPLOAD}), 1, bodies=True),
            Cap("WatchUser streams", frozenset({WATCH}), 3, counted=False),
        ),
        max_body_bytes=500,
        retry_after_seconds=0.5,
    )
    return Guard(dataclasses.replace(limits, **overrides))  # type: ignore[arg-type]


def refusal_message(verdict: Verdict | None) -> str:
    assert verdict is not None
    assert verdict.status.code == code_pb2.RESOURCE_EXHAUSTED
    return verdict.status.message


def test_a_capped_method_takes_its_cap_and_a_call_slot() -> None:
    g = guard()
    taken, refused = g.admit(UPLOAD)
    assert refused is None and [s.name for s in taken] == ["avatar uploads", "concurrent RPCs"]
    _, refused = g.admit(UPLOAD)
    assert "1 avatar uploads in flight" in refusal_message(refused)
    assert g.rpcs.in_use == 1  # the refused call holds nothing
    assert g.admit(GET)[1] is None  # other methods still go through


def test_uncounted_streams_have_their_own_cap_and_leave_calls_free() -> None:
    g = guard()
    for _ in range(3):
        assert g.admit(WATCH)[1] is None
    assert "3 WatchUser streams in flight" in refusal_message(g.admit(WATCH)[1])
    assert g.rpcs.in_use == 0
    assert g.admit(GET)[1] is None and g.admit(GET)[1] is None
    assert "2 calls in flight" in refusal_message(g.admit(GET)[1])


def test_refusals_carry_retry_info_and_name_the_limit() -> None:
    g = guard()
    g.admit(GET)
    g.admit(GET)
    message = refusal_message(g.admit(GET)[1])
    assert message == "server busy: 2 calls in flight (the limit); retry after 0.5 s"
    over = g.reserve(1001)
    assert isinstance(over, Verdict) and "1000 bytes of requests in memory" in refusal_message(over)
    assert g.budget.held == 0


def test_small_methods_take_small_requests_capped_ones_what_grpc_lets_through() -> None:
    g = guard(max_small_request_bytes=64)
    assert g.size_limit(GET) == 64 and g.size_limit(WATCH) == 64
    assert g.size_limit(UPLOAD) is None


def test_exempt_methods_are_health_and_reflection() -> None:
    g = guard()
    assert g.exempt("/grpc.health.v1.Health/Check")
    assert g.exempt("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert not g.exempt(GET)


class FakeError(grpc.RpcError):
    def __init__(self, trailing: tuple[tuple[str, str | bytes], ...]) -> None:
        self._trailing = trailing

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._trailing


def test_retry_delay_reads_retry_info_back() -> None:
    status = resource_exhausted("busy", 1.5)
    assert retry_delay(FakeError(((DETAILS_KEY, status.SerializeToString()),))) == 1.5
    far = resource_exhausted("busy", 3600)
    delay = retry_delay(FakeError((("x-other", "1"), (DETAILS_KEY, far.SerializeToString()))))
    assert delay == MAX_RETRY_DELAY_SECONDS


def test_no_retry_info_no_delay() -> None:
    assert retry_delay(FakeError(())) is None
    assert retry_delay(grpc.RpcError()) is None
    plain = status_pb2.Status(code=code_pb2.UNAVAILABLE, message="down")
    assert retry_delay(FakeError(((DETAILS_KEY, plain.SerializeToString()),))) is None
    assert retry_delay(FakeError(((DETAILS_KEY, too_large(10, 5).SerializeToString()),))) is None
    assert retry_delay(FakeError(((DETAILS_KEY, b"\xff not a status"),))) is None


def test_invalid_argument_carries_bad_request_only_with_a_field() -> None:
    status = invalid_argument("bad", [("email", "is not valid UTF-8")])
    bad = error_details_pb2.BadRequest()
    assert len(status.details) == 1 and status.details[0].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("email", "is not valid UTF-8")
    ]
    assert not invalid_argument("bad", []).details
