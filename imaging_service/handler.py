"""One thumbnail job, start to finish, without knowing it came from a queue.

``Handler.handle`` turns every error of the job into a decision.Result: what went wrong is
reported to accounts (FAILED) or left for a retry (RETRY, WAITING_FOR_ACCOUNTS); only a bug
escapes, and the consumer counts that as RETRY.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator

from accounts.v1 import accounts_pb2
from accounts.v1.events_pb2 import ThumbnailRequested
from opentelemetry import trace

from imaging_service.accounts_client import AccountsClient, StoredThumbnail
from imaging_service.decision import Outcome, Result
from imaging_service.errors import (
    AccountsRejected,
    AccountsUnavailable,
    SourceMissing,
    StorageUnavailable,
    TransientError,
    UserGone,
)
from imaging_service.metrics import Metrics, RenderProcesses, source_class
from imaging_service.pool import RenderPool
from imaging_service.render import ImageRejected, Limits, Thumbnail
from imaging_service.storage import Storage
from object_keys import SIZES, thumbnail_key

log = logging.getLogger(__name__)


class Handler:
    """Idempotent: the same event always writes the same keys and sends the same report, and the
    report is sent only after every thumbnail is stored, so a retry after any step is safe."""

    def __init__(
        self,
        storage: Storage,
        pool: RenderPool,
        accounts: AccountsClient,
        limits: Limits,
        metrics: Metrics | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._storage = storage
        self._pool = pool
        self._accounts = accounts
        self._limits = limits
        self._metrics = metrics or Metrics()
        self._tracer = tracer  # None: tracing is off, and no span is made
        replaced = self._metrics.render_processes_replaced
        self._processes = RenderProcesses(pool.pids, pool.processes, replaced)

    async def handle(self, event: ThumbnailRequested) -> Result:
        try:
            return await self._run(event)
        except AccountsUnavailable as exc:
            reason = type(exc).__name__
            return Result(Outcome.WAITING_FOR_ACCOUNTS, str(exc), reason=reason)
        except TransientError as exc:
            return Result(Outcome.RETRY, str(exc), reason=type(exc).__name__)
        except UserGone:
            return Result(Outcome.DONE, "user deleted", reason="user_gone")
        except AccountsRejected as exc:
            log.error("accounts rejected the report", extra=_ids(event) | {"error": str(exc)})
            return Result(Outcome.FAILED, str(exc), reason="ACCOUNTS_REJECTED")

    async def give_up(self, event: ThumbnailRequested, reason: str) -> None:
        """Reports GAVE_UP; raises like the reports in accounts_client (UserGone included)."""
        await self._accounts.report_failure(
            event.user_id, event.avatar_generation, "GAVE_UP", reason
        )

    async def _run(self, event: ThumbnailRequested) -> Result:
        generation, status = await self._accounts.current(event.user_id)
        if generation != event.avatar_generation or (status == accounts_pb2.THUMBNAIL_STATUS_READY):
            # Stale (a newer avatar exists) or already done (a duplicate): nothing to do.
            return Result(
                Outcome.DONE, f"skipped: user at generation {generation}", reason="skipped"
            )
        try:
            with self._stage("fetch"):
                data = await self._storage.get_original(event.avatar_object, self._limits.max_bytes)
            with self._stage("render"):
                rendered = await self._render(data)
        except SourceMissing as exc:
            return await self._fail(event, "SOURCE_MISSING", str(exc))
        except ImageRejected as exc:
            return await self._fail(event, exc.code, exc.reason)
        by_size = {t.size: t.png for t in rendered}
        stored = [
            StoredThumbnail(
                name=name,
                object=thumbnail_key(event.user_id, event.avatar_generation, name),
                width=size,
                height=size,
                size_bytes=len(by_size[size]),
            )
            for name, size in SIZES.items()
        ]
        with self._stage("upload"):
            proven = await asyncio.gather(
                *(self._storage.put_thumbnail(t.object, by_size[t.width]) for t in stored)
            )
            # Read back only what the PUT's answer does not prove (a store whose ETags are not
            # the MD5 of the object).
            unproven = [t for t, ok in zip(stored, proven, strict=True) if not ok]
            await asyncio.gather(*(self._verify(t) for t in unproven))
        try:
            with self._stage("callback"):
                await self._accounts.report_thumbnails(
                    event.user_id, event.avatar_generation, stored
                )
        except UserGone:
            await self._remove(event, stored)
            raise
        return Result(Outcome.DONE, reason="rendered")

    async def _render(self, data: bytes) -> list[Thumbnail]:
        """The pool's render, timed here: the render process itself records nothing. The size
        class comes from the pool's pre-scan; nothing here parses the image."""
        started = time.perf_counter()
        measured = await self._pool.measure(data)
        try:
            rendered = await self._pool.render(data, tuple(SIZES.values()), measured)
        finally:
            self._processes.look()
        seconds = time.perf_counter() - started
        size = source_class(measured.megapixels)
        self._metrics.render_seconds.labels(size).observe(seconds)
        return rendered

    @contextlib.contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        """A child span of the job (tracing on), and its duration in the stage histogram if it
        completes."""
        started = time.perf_counter()
        with (
            contextlib.nullcontext()
            if self._tracer is None
            else self._tracer.start_as_current_span(name)
        ):
            yield
        self._metrics.stage_seconds.labels(name).observe(time.perf_counter() - started)

    async def _verify(self, thumbnail: StoredThumbnail) -> None:
        """Reads back what was written: the callback must never point at a missing object."""
        size, content_type = await self._storage.stat(thumbnail.object)
        if (size, content_type) != (thumbnail.size_bytes, "image/png"):
            raise StorageUnavailable(
                f"{thumbnail.object} reads back as {size} bytes of {content_type!r}, "
                f"wrote {thumbnail.size_bytes} bytes of 'image/png'"
            )

    async def _fail(self, event: ThumbnailRequested, code: str, reason: str) -> Result:
        with self._stage("callback"):
            await self._accounts.report_failure(
                event.user_id, event.avatar_generation, code, reason
            )
        return Result(Outcome.FAILED, f"{code}: {reason}", reason=code)

    async def _remove(self, event: ThumbnailRequested, stored: list[StoredThumbnail]) -> None:
        """The user was deleted meanwhile: take back what this job wrote (best effort)."""
        try:
            await asyncio.gather(*(self._storage.remove(t.object) for t in stored))
        except TransientError as exc:
            log.warning(
                "could not remove orphaned thumbnails", extra=_ids(event) | {"error": str(exc)}
            )


def _ids(event: ThumbnailRequested) -> dict[str, object]:
    return {
        "user_id": event.user_id,
        "event_id": event.event_id,
        "generation": event.avatar_generation,
    }
