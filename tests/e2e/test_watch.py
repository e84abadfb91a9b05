"""WatchUser: the current state, then each change; many streams, one LISTEN connection."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from accounts.v1 import accounts_pb2, accounts_pb2_grpc

from devstack.net import free_port, wait_until
from tests.e2e.conftest import Service
from tests.e2e.support import (
    PENDING,
    READY,
    create_user,
    image_bytes,
    log_records,
    matching,
    query,
    wait_settled,
)

WATCHERS = 200


def watch(stub: Any, user_id: str, timeout: float = 120) -> Any:
    return stub.WatchUser(accounts_pb2.WatchUserRequest(id=user_id), timeout=timeout)


def state(user: Any) -> tuple[Any, ...]:
    """What a change is made of (URLs aside: presigned ones differ at every read)."""
    thumbs = tuple((t.object, t.size_bytes) for t in (user.thumbnails.small, user.thumbnails.large))
    return (
        user.thumbnail_status,
        user.avatar.generation,
        user.failure_code,
        user.update_time.ToDatetime(),
        thumbs,
    )


def until(stream: Iterator[Any], status: int) -> list[Any]:
    """Messages from the stream up to and including the first with `status`."""
    seen = []
    for user in stream:
        seen.append(user)
        if user.thumbnail_status == status:
            return seen
    raise AssertionError(f"stream ended before {status}: {seen}")


def assert_no_repeats(messages: list[Any]) -> None:
    states = [state(m) for m in messages]
    assert all(a != b for a, b in itertools.pairwise(states)), states


def test_watch_sends_the_current_state_then_each_change_and_not_found_on_delete(
    pipeline: tuple[Service, Service], accounts_stub
) -> None:
    user = create_user(accounts_stub, image_bytes("photo_chelsea.png"))
    stream = watch(accounts_stub, user.id)
    first_run = until(stream, READY)
    assert first_run[0].id == user.id
    assert first_run[0].update_time.ToDatetime() >= user.update_time.ToDatetime()
    assert_no_repeats(first_run)

    accounts_stub.RegenerateThumbnails(
        accounts_pb2.RegenerateThumbnailsRequest(id=user.id), timeout=10
    )
    second_run = until(stream, READY)
    assert [m.thumbnail_status for m in second_run] == [PENDING, READY]
    assert_no_repeats(first_run[-1:] + second_run)

    accounts_stub.DeleteUser(accounts_pb2.DeleteUserRequest(id=user.id), timeout=10)
    with pytest.raises(grpc.RpcError) as err:
        next(stream)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_watch_on_a_settled_user_sends_its_state_once_and_waits(
    pipeline: tuple[Service, Service], accounts_stub
) -> None:
    user = create_user(accounts_stub, image_bytes("geom_64x64.png"))
    ready = wait_settled(accounts_stub, user.id)
    stream = watch(accounts_stub, user.id, timeout=2)
    assert state(next(stream)) == state(ready)
    with pytest.raises(grpc.RpcError) as err:
        next(stream)  # nothing changes: the next thing is the deadline
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_200_concurrent_watchers_share_one_listen_connection(
    pipeline: tuple[Service, Service], accounts_stub, database_url: str
) -> None:
    accounts, _ = pipeline
    user = create_user(accounts_stub, image_bytes("geom_64x64.png"))
    assert wait_settled(accounts_stub, user.id).thumbnail_status == READY
    seen = len(log_records(accounts.process.log_text()))
    streams = [watch(accounts_stub, user.id) for _ in range(WATCHERS)]
    try:
        assert {next(s).thumbnail_status for s in streams} == {READY}
        hub = f"accounts-watch {accounts.process.pid}"
        sessions = query(
            database_url,
            "SELECT query FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            hub,
        )
        assert sessions == [('LISTEN "user_changes"',)], "not one listening session"
        (total,) = query(
            database_url,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()",
        )[0]
        assert total < WATCHERS // 4, f"{total} sessions for {WATCHERS} watchers"

        accounts_stub.RegenerateThumbnails(
            accounts_pb2.RegenerateThumbnailsRequest(id=user.id), timeout=10
        )
        assert {next(s).thumbnail_status for s in streams} == {PENDING}
    finally:
        for s in streams:
            s.cancel()

    def all_ended() -> bool:
        records = log_records(accounts.process.log_text())[seen:]
        return len(matching(records, msg="call cancelled", method="WatchUser")) == WATCHERS

    wait_until(all_ended, 30, f"the server ending {WATCHERS} cancelled streams")


def test_sigterm_ends_open_streams_so_shutdown_does_not_wait_for_the_grace(
    pipeline: tuple[Service, Service],
    accounts_stub,
    service_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """A second replica with a 600 s grace must still exit within the 30 s we wait."""
    port = free_port()
    env = {**service_env, "ACCOUNTS_PORT": str(port), "SHUTDOWN_GRACE_SECONDS": "600"}
    replica = Service("accounts-2", "accounts_service", port, env, tmp_path / "accounts-2.log")
    replica.start()
    try:
        user = create_user(accounts_stub, image_bytes("geom_64x64.png"))
        with grpc.insecure_channel(replica.addr) as channel:
            stream = watch(accounts_pb2_grpc.AccountsServiceStub(channel), user.id)
            assert next(stream).id == user.id
            assert replica.process.terminate(timeout=30) == 0, replica.process.log_tail()
            with pytest.raises(grpc.RpcError) as err:
                next(stream)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in (err.value.details() or "")
    finally:
        replica.process.kill()
