"""Worker processes that run the pure renderer, so decoding never blocks the event loop."""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from imaging_service import render
from imaging_service.errors import RenderUnavailable

log = logging.getLogger(__name__)

# A fresh process now and then returns whatever memory decoding fragmented.
MAX_TASKS_PER_CHILD = 500


class RenderPool:
    """``processes`` worker processes started by a fork server (never forked from this
    multi-threaded process); a pool broken by a dying worker is replaced for the next job."""

    def __init__(self, processes: int, limits: render.Limits) -> None:
        self.processes = processes
        self._limits = limits
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["imaging_service.render"])
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=self._context,
            max_tasks_per_child=MAX_TASKS_PER_CHILD,
        )

    async def render(
        self, data: bytes, sizes: Sequence[int] = render.DEFAULT_SIZES
    ) -> list[render.Thumbnail]:
        """Raises render.ImageRejected (bad input) or RenderUnavailable (the pool broke: this
        job is worth a retry, the next one gets a new pool)."""
        executor = self._executor
        job = functools.partial(render.render, data, tuple(sizes), self._limits)
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, job)
        except BrokenProcessPool as exc:
            self._replace(executor)
            raise RenderUnavailable(f"a render process died: {exc}") from exc

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        if self._executor is not broken:
            return  # another job already replaced it
        log.error("render pool broken, starting a new one")
        self._executor = self._new_executor()
        broken.shutdown(wait=False, cancel_futures=True)

    async def close(self) -> None:
        """Waits for running renders; queued ones are cancelled."""
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
