"""What becomes of one delivered thumbnail request: the consumer's whole decision, in one function.

``decide(message, result, policy, jitter)`` is asked twice per delivery: before the job runs
(``result`` None: run it, or settle it without running) and once the handler has answered.

    message                                 result                action (counter label)
    undecodable                             -                     term (UNDECODABLE)
    shutdown (the job was cancelled)        -                     nak now (Shutdown)
    attempt > max_deliver, the last         None                  give up with the last result,
      attempt here not WAITING_FOR_ACCOUNTS                         without running the job (1)
    any other                               None                  run
    any                                     DONE                  ack
    any                                     FAILED                term
    any                                     WAITING_FOR_ACCOUNTS  nak(back-off)  (2)
    attempt < max_deliver                   RETRY                 nak(back-off)
    attempt >= max_deliver                  RETRY                 give up (GAVE_UP)

    back-off = min(cap, base * 2**(min(attempt, max_deliver) - 1)) * jitter, jitter in [0.5, 1]
    give up  = report GAVE_UP, copy to the dead-letter stream, term; if either step fails
               transiently: nak(cap) and remember the result, so the next delivery gives up again.

(1) An attempt did not finish (worker killed) or a GAVE_UP report failed: it is not tried again.
(2) Accounts is unreachable, so no result could be reported: such attempts never exhaust the
    retries; the job waits for accounts to come back.

``message.last`` is what the previous attempt of this message came to in this process (a
``remember``ed result); a restarted worker does not know it and gives up past max_deliver.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.Enum):
    """What the handler's attempt at a job came to."""

    DONE = "done"  # thumbnails reported, or nothing to do (stale, duplicate, user gone)
    FAILED = "failed"  # the failure was reported to accounts (or it refused the report): final
    RETRY = "retry"  # something we depend on is down (storage, render pool), or a bug, a timeout
    WAITING_FOR_ACCOUNTS = "waiting_for_accounts"  # accounts unreachable: nothing reported


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    detail: str = ""  # the failure or the transient error, for the log line and GAVE_UP
    # The label of the job counters: rendered, skipped or user_gone (DONE), the failure code
    # (FAILED), the transient error's class (RETRY, WAITING_FOR_ACCOUNTS).
    reason: str = ""

    @property
    def label(self) -> str:
        return self.reason or self.outcome.value


@dataclass(frozen=True)
class RetryPolicy:
    """``max_deliver`` counts every delivery (1 + retries); times in seconds."""

    max_deliver: int
    base: float
    cap: float

    def delay(self, attempt: int, jitter: float) -> float:
        """Back-off before delivery ``attempt + 1``; ``jitter`` in [0.5, 1] keeps it <= cap."""
        doublings = min(max(attempt - 1, 0), 64)  # 2.0**1024 would overflow
        return min(self.cap, self.base * 2.0**doublings) * jitter


@dataclass(frozen=True)
class Message:
    """The facts of one delivery that the decision depends on."""

    attempt: int  # JetStream's num_delivered, from 1
    decodable: bool = True
    shutdown: bool = False  # the worker is stopping and cancelled the job
    last: Result | None = None  # what the previous attempt came to, if remembered


class Verb(enum.Enum):
    RUN = "run"
    ACK = "ack"
    NAK = "nak"
    TERM = "term"
    GIVE_UP = "give_up"


@dataclass(frozen=True)
class Action:
    """What the consumer does with the delivery, completely.

    ACK / TERM: settle, count as processed / failed under ``label``. NAK: redeliver after
    ``delay`` seconds (None: at once), count as retried under ``label``. GIVE_UP: report GAVE_UP
    with ``reason``, dead-letter, term, count as failed under GAVE_UP; if a step fails
    transiently, nak after ``delay`` instead and count as retried under the error's class.
    ``remember``: the result to hand to the next delivery as ``Message.last`` (None: forget).
    """

    verb: Verb
    label: str = ""
    delay: float | None = None
    reason: str = ""
    remember: Result | None = None


RUN = Action(Verb.RUN)
# The result of an attempt past max_deliver whose predecessor left none in this process.
NOT_FINISHED = Result(Outcome.RETRY, "an attempt did not finish")


def decide(message: Message, result: Result | None, policy: RetryPolicy, jitter: float) -> Action:
    """The table in the module docstring; ``jitter`` in [0.5, 1] (consumer.default_jitter)."""
    if not message.decodable:
        return Action(Verb.TERM, "UNDECODABLE")
    if message.shutdown:
        return Action(Verb.NAK, "Shutdown")
    attempts = min(message.attempt, policy.max_deliver)
    if result is None:
        last = message.last
        if message.attempt <= policy.max_deliver or (
            last is not None and last.outcome is Outcome.WAITING_FOR_ACCOUNTS
        ):
            return RUN
        return _give_up(last or NOT_FINISHED, attempts, policy)
    if result.outcome is Outcome.DONE:
        return Action(Verb.ACK, result.label)
    if result.outcome is Outcome.FAILED:
        return Action(Verb.TERM, result.label)
    if result.outcome is Outcome.RETRY and message.attempt >= policy.max_deliver:
        return _give_up(result, attempts, policy)
    delay = policy.delay(attempts, jitter)
    return Action(Verb.NAK, result.label, delay=delay, remember=result)


def _give_up(result: Result, attempts: int, policy: RetryPolicy) -> Action:
    reason = f"gave up after {attempts} attempts: {result.detail}"
    return Action(Verb.GIVE_UP, "GAVE_UP", delay=policy.cap, reason=reason, remember=result)
