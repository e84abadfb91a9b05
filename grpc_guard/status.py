"""The rich statuses the guards answer with, and `retry_delay` to read RetryInfo back on clients.

Details travel as a serialized `google.rpc.Status` in the `grpc-status-details-bin` trailer.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any, NoReturn

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2

DETAILS_KEY = "grpc-status-details-bin"
# A delay a server asks for is honoured up to this; beyond it something is wrong with the hint.
MAX_RETRY_DELAY_SECONDS = 60.0
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def resource_exhausted(message: str, retry_after: float) -> status_pb2.Status:
    """RESOURCE_EXHAUSTED that asks the caller to come back after `retry_after` seconds."""
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message)
    delay = duration_pb2.Duration()
    delay.FromTimedelta(timedelta(seconds=retry_after))
    status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status


def too_large(size: int, limit: int) -> status_pb2.Status:
    """RESOURCE_EXHAUSTED for a request larger than its method takes (as grpc answers one over
    its receive limit); no RetryInfo: the same request will never fit."""
    message = f"request of {size} bytes is larger than the {limit} bytes this method takes"
    return status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message)


def no_message() -> status_pb2.Status:
    """What a call whose request never arrived is counted as: grpc has answered one over its
    receive limit with RESOURCE_EXHAUSTED already (a client that sends no message is rarer)."""
    message = "no request message arrived (grpc refuses one over the server's receive limit)"
    return status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message)


def invalid_argument(message: str, violations: Iterable[tuple[str, str]]) -> status_pb2.Status:
    """INVALID_ARGUMENT with a BadRequest of (field, description) pairs (none: no BadRequest)."""
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message)
    bad = error_details_pb2.BadRequest()
    for field, description in violations:
        bad.field_violations.add(field=field, description=description)
    if bad.field_violations:
        status.details.add().Pack(bad)
    return status


async def abort(context: grpc.aio.ServicerContext[Any, Any], status: status_pb2.Status) -> NoReturn:
    """Ends the call with `status`, its details in the trailer; always raises."""
    await context.abort(
        _BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN),
        status.message,
        trailing_metadata=((DETAILS_KEY, status.SerializeToString()),),
    )
    raise AssertionError("unreachable")  # context.abort always raises


def retry_delay(error: grpc.RpcError) -> float | None:
    """Seconds the server asked to wait before retrying (RetryInfo), or None if it did not
    ask: then the error is not one to retry on this account. Capped at a minute."""
    trailing = getattr(error, "trailing_metadata", None)
    if trailing is None:
        return None
    for key, value in trailing() or ():
        if key != DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:  # a malformed trailer from a peer: no hint
            return None
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                seconds: float = info.retry_delay.ToTimedelta().total_seconds()
                return min(max(seconds, 0.0), MAX_RETRY_DELAY_SECONDS)
    return None
