"""The consumer's whole decision as a table: (delivery facts, handler result) -> action."""

from __future__ import annotations

import pytest

from imaging_service.decision import (
    NOT_FINISHED,
    RUN,
    Action,
    Message,
    Outcome,
    Result,
    RetryPolicy,
    Verb,
    decide,
)

POLICY = RetryPolicy(max_deliver=3, base=1.0, cap=60.0)
JITTER = 0.5
DONE = Result(Outcome.DONE, reason="rendered")
SKIPPED = Result(Outcome.DONE, "skipped: user at generation 2", reason="skipped")
FAILED = Result(Outcome.FAILED, "TRUNCATED: cut short", reason="TRUNCATED")
S3_DOWN = Result(Outcome.RETRY, "S3 unreachable", reason="StorageUnavailable")
ACCOUNTS_DOWN = Result(Outcome.WAITING_FOR_ACCOUNTS, "UNAVAILABLE", reason="AccountsUnavailable")
BARE_RETRY = Result(Outcome.RETRY)  # no reason: the outcome names the counter


def nak(result: Result, delay: float) -> Action:
    return Action(Verb.NAK, result.label, delay=delay, remember=result)


def give_up(result: Result, attempts: int) -> Action:
    reason = f"gave up after {attempts} attempts: {result.detail}"
    return Action(Verb.GIVE_UP, "GAVE_UP", delay=POLICY.cap, reason=reason, remember=result)


TABLE: list[tuple[str, Message, Result | None, Action]] = [
    # before the job runs
    ("undecodable", Message(1, decodable=False), None, Action(Verb.TERM, "UNDECODABLE")),
    ("undecodable late", Message(9, decodable=False), None, Action(Verb.TERM, "UNDECODABLE")),
    ("first delivery runs", Message(1), None, RUN),
    ("last delivery runs", Message(3, last=S3_DOWN), None, RUN),
    ("past max, last failed: give up", Message(4, last=S3_DOWN), None, give_up(S3_DOWN, 3)),
    ("past max, nothing known", Message(4), None, give_up(NOT_FINISHED, 3)),
    ("past max, waiting for accounts", Message(7, last=ACCOUNTS_DOWN), None, RUN),
    ("shutdown", Message(2, shutdown=True), None, Action(Verb.NAK, "Shutdown")),
    (
        "shutdown past max",
        Message(5, shutdown=True, last=S3_DOWN),
        None,
        Action(Verb.NAK, "Shutdown"),
    ),
    # once the handler answered
    ("done", Message(1), DONE, Action(Verb.ACK, "rendered")),
    ("done on a late attempt", Message(9), SKIPPED, Action(Verb.ACK, "skipped")),
    ("failed, reported", Message(1), FAILED, Action(Verb.TERM, "TRUNCATED")),
    ("failed on the last attempt", Message(3), FAILED, Action(Verb.TERM, "TRUNCATED")),
    ("retry 1", Message(1), S3_DOWN, nak(S3_DOWN, 0.5)),
    ("retry 2", Message(2), S3_DOWN, nak(S3_DOWN, 1.0)),
    ("retry on the last attempt", Message(3), S3_DOWN, give_up(S3_DOWN, 3)),
    ("retry past max", Message(4), S3_DOWN, give_up(S3_DOWN, 3)),
    ("retry without reason", Message(1), BARE_RETRY, nak(BARE_RETRY, 0.5)),
    ("waiting 1", Message(1), ACCOUNTS_DOWN, nak(ACCOUNTS_DOWN, 0.5)),
    ("waiting at max", Message(3), ACCOUNTS_DOWN, nak(ACCOUNTS_DOWN, 2.0)),
    (
        "waiting past max: back-off stops growing",
        Message(50),
        ACCOUNTS_DOWN,
        nak(ACCOUNTS_DOWN, 2.0),
    ),
]


@pytest.mark.parametrize(
    ("message", "result", "action"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE]
)
def test_decision_table(message: Message, result: Result | None, action: Action) -> None:
    assert decide(message, result, POLICY, JITTER) == action


def test_max_deliver_one_means_no_retry() -> None:
    policy = RetryPolicy(max_deliver=1, base=1.0, cap=60.0)
    assert decide(Message(1), S3_DOWN, policy, 1.0).verb is Verb.GIVE_UP


def test_the_back_off_is_the_policy_delay_with_the_jitter_given() -> None:
    policy = RetryPolicy(max_deliver=10, base=1.0, cap=60.0)
    delays = [decide(Message(n), S3_DOWN, policy, 1.0).delay for n in range(1, 10)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
