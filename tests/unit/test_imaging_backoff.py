"""The worker's retry schedule, its jitter and the decoding of requests (pure, no NATS); the
decision table itself is tests/unit/test_decision.py."""

from __future__ import annotations

import pytest
from accounts.v1.events_pb2 import ThumbnailRequested

from imaging_service.consumer import decode, default_jitter
from imaging_service.decision import RetryPolicy

POLICY = RetryPolicy(max_deliver=6, base=1.0, cap=60.0)


def test_delay_doubles_from_base_up_to_cap() -> None:
    delays = [POLICY.delay(attempt, jitter=1.0) for attempt in range(1, 10)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


@pytest.mark.parametrize("attempt", range(1, 20))
@pytest.mark.parametrize("jitter", [0.5, 0.75, 1.0])
def test_jitter_never_exceeds_cap_nor_drops_below_half(attempt: int, jitter: float) -> None:
    full = min(60.0, 2.0 ** (attempt - 1))
    delay = POLICY.delay(attempt, jitter)
    assert full / 2 <= delay <= full <= POLICY.cap


def test_a_huge_attempt_count_still_gives_the_cap() -> None:
    assert POLICY.delay(10_000, jitter=1.0) == 60.0


def test_the_default_jitter_stays_within_half_and_full() -> None:
    samples = [default_jitter() for _ in range(1000)]
    assert min(samples) >= 0.5 and max(samples) <= 1.0
    assert max(samples) - min(samples) > 0.25, "jitter should actually spread the retries"


def test_decode_accepts_a_complete_event() -> None:
    event = ThumbnailRequested(
        event_id="e", user_id="u", avatar_object="avatars/u/1/original", avatar_generation=1
    )
    assert decode(event.SerializeToString()) == event


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xff\xff not protobuf",
        ThumbnailRequested(user_id="u", avatar_generation=1).SerializeToString(),
        ThumbnailRequested(avatar_object="o", avatar_generation=1).SerializeToString(),
        ThumbnailRequested(user_id="u", avatar_object="o").SerializeToString(),
        b"",
    ],
)
def test_decode_refuses_what_cannot_be_acted_on(payload: bytes) -> None:
    assert decode(payload) is None
