"""gRPC ImagingService: proto in, one call, proto out; errors mapped to statuses in one place.

RenderThumbnails and ReplayDeadLetters take the internal credential (INTERNAL_METHODS, checked by
grpc_guard.auth before a servicer method runs); GetQueueStats and health stay open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

import grpc
from google.protobuf import empty_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from imaging.v1 import imaging_pb2, imaging_pb2_grpc

from grpc_guard.status import resource_exhausted
from imaging_service.bus import QueueStats
from imaging_service.errors import Overloaded, QueueUnavailable, RenderUnavailable
from imaging_service.pool import RenderPool
from imaging_service.render import DEFAULT_SIZES, ImageRejected, Thumbnail

ERROR_DOMAIN = "imaging.v1"
MIN_SIZE, MAX_SIZE, MAX_SIZES = 16, 1024, 10
INTERNAL_METHODS = frozenset(
    {
        "/imaging.v1.ImagingService/RenderThumbnails",
        "/imaging.v1.ImagingService/ReplayDeadLetters",
    }
)
RETRY_AFTER_SECONDS = 1.0  # what RESOURCE_EXHAUSTED asks a caller to wait

Context = grpc.aio.ServicerContext[Any, Any]


class InvalidSizes(Exception):
    pass


def check_sizes(sizes: list[int]) -> tuple[int, ...]:
    """The sizes asked for, DEFAULT_SIZES when none; raises InvalidSizes."""
    if not sizes:
        return DEFAULT_SIZES
    if len(sizes) > MAX_SIZES:
        raise InvalidSizes(f"at most {MAX_SIZES} sizes, got {len(sizes)}")
    bad = [s for s in sizes if not MIN_SIZE <= s <= MAX_SIZE]
    if bad:
        raise InvalidSizes(f"each size must be {MIN_SIZE} to {MAX_SIZE} pixels, got {bad}")
    return tuple(sizes)


async def abort(context: Context, exc: Exception) -> NoReturn:
    """The one table from our errors to gRPC statuses, with rich details."""
    status = status_pb2.Status(message=str(exc))
    if isinstance(exc, Overloaded):
        status = resource_exhausted(str(exc), exc.retry_after)
    elif isinstance(exc, InvalidSizes):
        status.code = code_pb2.INVALID_ARGUMENT
        status.details.add().Pack(_bad_request("sizes", str(exc)))
    elif isinstance(exc, ImageRejected):
        status.code = code_pb2.INVALID_ARGUMENT
        status.details.add().Pack(_bad_request("image", exc.reason))
        status.details.add().Pack(error_details_pb2.ErrorInfo(reason=exc.code, domain=ERROR_DOMAIN))
    elif isinstance(exc, (RenderUnavailable, QueueUnavailable)):
        status.code = code_pb2.UNAVAILABLE
    else:
        status.code = code_pb2.INTERNAL
    await context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("unreachable")  # abort_with_status always raises


def _bad_request(field: str, description: str) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
        ]
    )


class Previews:
    """RenderThumbnails' renders: at most ``limit`` running or waiting for a render process;
    one more is refused at once (Overloaded), never queued.

    A render counts until it has finished, even when its caller stopped waiting: the render
    process goes on with it (up to its time budget), so a caller that cancels and calls again
    cannot pile up renders past the limit.
    """

    def __init__(self, pool: RenderPool, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the preview limit must be at least 1, got {limit}")
        self.limit = limit
        self._pool = pool
        self._rendering: set[asyncio.Future[list[Thumbnail]]] = set()  # strong references

    @property
    def in_flight(self) -> int:
        return len(self._rendering)

    async def render(self, image: bytes, sizes: Sequence[int]) -> list[Thumbnail]:
        """Raises Overloaded, or what RenderPool.render raises."""
        if self.in_flight >= self.limit:
            raise Overloaded(
                f"{self.limit} previews are rendering or waiting; retry after "
                f"{RETRY_AFTER_SECONDS:g} s",
                RETRY_AFTER_SECONDS,
            )
        rendering = asyncio.ensure_future(self._pool.render(image, sizes))
        self._rendering.add(rendering)
        rendering.add_done_callback(self._finished)
        return await asyncio.shield(rendering)

    def _finished(self, rendering: asyncio.Future[list[Thumbnail]]) -> None:
        self._rendering.discard(rendering)
        if not rendering.cancelled():
            rendering.exception()  # read: a caller who stopped waiting leaves it unread


class ImagingServicer(imaging_pb2_grpc.ImagingServiceServicer):
    def __init__(
        self,
        previews: Previews,
        stats: Callable[[], Awaitable[QueueStats]],
        replay: Callable[[int], Awaitable[int]],
    ) -> None:
        self._previews = previews
        self._stats = stats
        self._replay = replay

    async def RenderThumbnails(
        self, request: imaging_pb2.RenderThumbnailsRequest, context: Context
    ) -> imaging_pb2.RenderThumbnailsResponse:
        try:
            sizes = check_sizes(list(request.sizes))
            thumbnails = await self._previews.render(request.image, sizes)
        except (InvalidSizes, ImageRejected, RenderUnavailable, Overloaded) as exc:
            await abort(context, exc)
        return imaging_pb2.RenderThumbnailsResponse(
            thumbnails=[
                imaging_pb2.RenderedThumbnail(
                    size=t.size, width=t.size, height=t.size, content_type="image/png", data=t.png
                )
                for t in thumbnails
            ]
        )

    async def GetQueueStats(
        self, request: empty_pb2.Empty, context: Context
    ) -> imaging_pb2.GetQueueStatsResponse:
        try:
            stats = await self._stats()
        except QueueUnavailable as exc:
            await abort(context, exc)
        return imaging_pb2.GetQueueStatsResponse(
            pending=stats.pending,
            ack_pending=stats.ack_pending,
            redelivered=stats.redelivered,
            dead_lettered=stats.dead_lettered,
            processed=stats.processed,
            failed=stats.failed,
        )

    async def ReplayDeadLetters(
        self, request: imaging_pb2.ReplayDeadLettersRequest, context: Context
    ) -> imaging_pb2.ReplayDeadLettersResponse:
        try:
            replayed = await self._replay(request.limit)
        except QueueUnavailable as exc:
            await abort(context, exc)
        return imaging_pb2.ReplayDeadLettersResponse(replayed=replayed)
