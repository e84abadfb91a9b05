"""The CLI's watch outlives the end of a stream: a server that ages its connection out (or a
replica that shuts down) ends WatchUser with UNAVAILABLE, and the CLI watches again."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from accounts.v1 import accounts_pb2

from accounts_service import cli

PENDING = accounts_pb2.THUMBNAIL_STATUS_PENDING
READY = accounts_pb2.THUMBNAIL_STATUS_READY


class Ended(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


class Stream:
    """A WatchUser call as a sync stub returns it: iterable, cancellable."""

    def __init__(self, states: list[int], end: grpc.RpcError | None) -> None:
        self._states, self._end = states, end

    def __iter__(self) -> Iterator[Any]:
        for status in self._states:
            yield accounts_pb2.User(id="u", thumbnail_status=status)
        if self._end is not None:
            raise self._end

    def cancel(self) -> None:
        pass


class Stub:
    def __init__(self, *streams: Stream) -> None:
        self.streams = list(streams)
        self.calls: list[dict[str, Any]] = []

    def WatchUser(self, request: Any, **kwargs: Any) -> Stream:
        self.calls.append(kwargs)
        return self.streams.pop(0)


def test_a_stream_ended_by_the_server_is_watched_again_until_settled() -> None:
    stub = Stub(
        Stream([PENDING], Ended(grpc.StatusCode.UNAVAILABLE)),
        Stream([], Ended(grpc.StatusCode.UNAVAILABLE)),
        Stream([PENDING, READY], None),
    )
    slept: list[float] = []
    user = cli.wait_settled(stub, "u", 30, out=io.StringIO(), sleep=slept.append)
    assert user.thumbnail_status == READY
    assert len(stub.calls) == 3
    # The first call fails fast; the calls after an UNAVAILABLE wait for a ready replica.
    assert [call["wait_for_ready"] for call in stub.calls] == [False, True, True]
    assert slept == [0.1, 0.2]


def test_other_endings_are_not_retried() -> None:
    stub = Stub(Stream([PENDING], Ended(grpc.StatusCode.NOT_FOUND)))
    with pytest.raises(Ended):
        cli.wait_settled(stub, "u", 30, out=io.StringIO(), sleep=pytest.fail)
    assert len(stub.calls) == 1
