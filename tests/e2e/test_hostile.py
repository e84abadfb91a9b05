"""Hostile uploads against the running pipeline: every one gets a bounded answer, and nobody else
notices: health keeps answering within a second, the next ordinary avatar is READY within 5 s, and
neither service process is restarted."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from accounts.v1 import accounts_pb2

from tests.e2e.conftest import Service, health_status
from tests.e2e.support import (
    FAILED,
    PENDING,
    READY,
    beside,
    create_user,
    error_reason,
    image_bytes,
    wait_settled,
)
from tests.hostile import HOSTILE, MIB, Hostile

LIMIT = 20 * MIB  # the default MAX_AVATAR_BYTES
SIZE = LIMIT - 512 * 1024  # "up to the byte limit": just under it, with room for the envelope
ANSWER_SECONDS = 1.0
HEALTH_SECONDS = 1.0
NEXT_READY_SECONDS = 5.0
SETTLE_SECONDS = 60.0


@dataclass
class HealthWatch:
    """Health of each address, asked over and over from a thread; the slowest answer of each."""

    addrs: list[str]
    slowest: dict[str, float] = field(default_factory=dict)
    unanswered: list[str] = field(default_factory=list)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            for addr in self.addrs:
                started = time.monotonic()
                status = health_status(addr)
                took = time.monotonic() - started
                self.slowest[addr] = max(self.slowest.get(addr, 0.0), took)
                if status is None:
                    self.unanswered.append(addr)
            stop.wait(0.05)  # pacing between rounds, not synchronisation


@contextmanager
def health_watched(*services: Service) -> Iterator[HealthWatch]:
    watch = HealthWatch([s.addr for s in services])
    with beside(watch.run):
        yield watch
    assert not watch.unanswered, f"health did not answer within 1 s: {watch.unanswered}"
    for addr, seconds in watch.slowest.items():
        assert seconds < HEALTH_SECONDS, f"health of {addr} took {seconds:.2f} s"


def pids(*services: Service) -> list[int | None]:
    return [s.process.pid for s in services]


def send(stub: Any, data: bytes) -> tuple[float, Any, grpc.RpcError | None]:
    started = time.monotonic()
    try:
        user = create_user(stub, data)
    except grpc.RpcError as exc:
        return time.monotonic() - started, None, exc
    return time.monotonic() - started, user, None


@pytest.mark.parametrize("hostile", HOSTILE, ids=[h.name for h in HOSTILE])
def test_hostile_upload_gets_a_bounded_answer_and_disturbs_nobody(
    hostile: Hostile,
    accounts_stub: Any,
    pipeline: tuple[Service, Service],
) -> None:
    accounts, imaging = pipeline
    data = hostile.build(max(SIZE, hostile.min_size))
    assert len(data) <= LIMIT, f"{hostile.name} built {len(data):,} bytes, over the limit"
    before = pids(accounts, imaging)
    with health_watched(accounts, imaging):
        took, user, error = send(accounts_stub, data)
        assert took < ANSWER_SECONDS, f"CreateUser answered after {took:.2f} s"
        if error is not None:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
            assert error_reason(error) == "TOO_COMPLEX", error.details()
            # The reason names what was over its cap and how many there were.
            assert any(ch.isdigit() for ch in error.details() or ""), error.details()
        else:
            assert user.thumbnail_status == PENDING
            settled = wait_settled(accounts_stub, user.id, SETTLE_SECONDS)
            assert settled.thumbnail_status == FAILED, settled
            assert settled.failure_code == "TOO_COMPLEX", settled
        started = time.monotonic()
        normal = create_user(accounts_stub, image_bytes("photo_chelsea.png"))
        ready = wait_settled(accounts_stub, normal.id, NEXT_READY_SECONDS)
        assert ready.thumbnail_status == READY, ready
        assert time.monotonic() - started < NEXT_READY_SECONDS
    assert pids(accounts, imaging) == before, "a service process was restarted"


def test_bomb_refusal_names_what_and_how_many(accounts_stub: Any, pipeline: object) -> None:
    bomb = next(h for h in HOSTILE if h.name == "jpeg_progressive_bomb")
    with pytest.raises(grpc.RpcError) as caught:
        create_user(accounts_stub, bomb.build(SIZE))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(caught.value) == "TOO_COMPLEX"
    message = caught.value.details() or ""
    assert "scan" in message.lower() and any(ch.isdigit() for ch in message), message


def get_user_seconds(stub: Any, user_id: str) -> float:
    started = time.monotonic()
    stub.GetUser(accounts_pb2.GetUserRequest(id=user_id), timeout=5)
    return time.monotonic() - started
