"""Render processes for the pure renderer: recycled, isolated from each other, admitted by cost."""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.forkserver
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from image_policy import formats
from imaging_service import render
from imaging_service.budgets import MAX_MEGAPIXELS_IN_FLIGHT, MegapixelBudget, RenderBudget
from imaging_service.errors import RenderUnavailable
from imaging_service.render_process import Worker, environment_for_renders

MAX_TASKS_PER_CHILD = 500
MEASURED_HEAD_BYTES = 64 * 1024


class RenderPool:
    """``processes`` render processes, each started by a fork server (never forked from this
    multi-threaded process) and given one render at a time.

    Recycled: a process is replaced after ``max_tasks_per_child`` renders, so that whatever its
    allocator fragmented cannot accumulate. Isolated: a process that dies, even by a segfault,
    fails only the render it was running (RenderUnavailable, worth a retry) and is replaced for
    the next one. Admitted by cost: a render waits until the megapixels being decoded (from the
    pre-scan) leave room for its own within ``max_megapixels_in_flight`` (see MegapixelBudget).
    Timed: a render still running when its ``budget`` is spent has its process killed (and
    replaced) and fails with ImageRejected TOO_COMPLEX. Secret-free: render processes (and the
    fork server they come from) start with the environment reduced (render_process.py).
    """

    def __init__(
        self,
        processes: int,
        limits: render.Limits,
        *,
        max_tasks_per_child: int = MAX_TASKS_PER_CHILD,
        max_megapixels_in_flight: float = MAX_MEGAPIXELS_IN_FLIGHT,
        budget: RenderBudget | None = None,  # None: RenderBudget()
    ) -> None:
        if processes < 1 or max_tasks_per_child < 1:
            raise ValueError("processes and max_tasks_per_child must be at least 1")
        self.processes = processes
        self.budget = budget or RenderBudget()
        self._limits = limits
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["imaging_service.render", "imaging_service.render_process"])
        # Now, while the service has hardly any threads: see environment_for_renders.
        with environment_for_renders():
            multiprocessing.forkserver.ensure_running()
        self._workers = [Worker(context, max_tasks_per_child) for _ in range(processes)]
        self._idle: asyncio.Queue[Worker] = asyncio.Queue()
        for worker in self._workers:
            self._idle.put_nowait(worker)
        self._admission = MegapixelBudget(max_megapixels_in_flight)
        self._threads = ThreadPoolExecutor(processes, thread_name_prefix="render")
        self._running: set[asyncio.Future[list[render.Thumbnail]]] = set()
        self._closed = False

    @property
    def megapixels_in_flight(self) -> float:
        """Decoded megapixels of the renders admitted and not finished."""
        return self._admission.in_use

    def pids(self) -> list[int]:
        """Process ids of the render processes that exist now: one starts with its first render,
        its replacement as soon as it has done its quota."""
        return [worker.pid for worker in self._workers if worker.pid is not None]

    async def measure(self, data: bytes) -> formats.Structure:
        """The bounded structural pre-scan of ``data``'s head, in a thread; raises
        render.ImageRejected. Never Pillow: what a render process parses is never parsed in
        this process.

        Of a file larger than MEASURED_HEAD_BYTES only the head is scanned, when it holds the
        size (the usual JPEG, PNG and GIF): the render process pre-scans the whole file again
        before it decodes anything, so that a count past the head is refused there
        (TOO_COMPLEX), and scanning 4 MB twice cost the service 4 ms of CPU per phone photo.
        The rest is scanned here whole: a file over the byte limit (TOO_LARGE at once), one
        whose size is not in its head (WebP, AVIF, HEIF, large metadata before the frame), and
        one whose head is refused, so that a refusal is always the whole file's."""
        return await asyncio.to_thread(_measure, data, self._limits)

    async def render(
        self,
        data: bytes,
        sizes: Sequence[int] = render.DEFAULT_SIZES,
        measured: formats.Structure | None = None,
    ) -> list[render.Thumbnail]:
        """Renders ``data`` in a render process; ``measured`` is its ``measure``, taken here
        when not given. Raises render.ImageRejected (bad input: from ``measure``, before any
        process is used, or from the render process's own pre-scan and decoding; TOO_COMPLEX
        past the time budget), ValueError (bad ``sizes``) or RenderUnavailable (the process
        died during this render, or the pool is closed: worth a retry)."""
        self._check_open()
        structure = measured if measured is not None else await self.measure(data)
        cost = await self._admission.acquire(structure.megapixels)
        try:
            self._check_open()
            worker = await self._idle.get()
        except BaseException:
            self._admission.release(cost)
            raise
        if self._closed:
            self._finished(worker, cost)
            self._check_open()
        job = (data, tuple(sizes), self._limits)
        seconds = self.budget.seconds(structure.megapixels)
        running = asyncio.get_running_loop().run_in_executor(
            self._threads, worker.run, job, seconds, structure.megapixels
        )
        self._running.add(running)
        running.add_done_callback(self._running.discard)
        # Released when the process is done, even if our caller stopped waiting for it.
        running.add_done_callback(lambda _: self._finished(worker, cost))
        return await asyncio.shield(running)

    def _check_open(self) -> None:
        if self._closed:
            raise RenderUnavailable("the render pool is closed")

    def _finished(self, worker: Worker, cost: float) -> None:
        self._admission.release(cost)
        self._idle.put_nowait(worker)

    async def close(self) -> None:
        """Waits for the renders running in a process, fails those still waiting for one
        (RenderUnavailable), then stops the processes."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*self._running, return_exceptions=True)
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._threads, worker.stop) for worker in self._workers)
        )
        self._threads.shutdown(wait=False)


def _measure(data: bytes, limits: render.Limits) -> formats.Structure:
    if MEASURED_HEAD_BYTES < len(data) <= limits.max_bytes:
        try:
            head = formats.measure(data[:MEASURED_HEAD_BYTES], limits)
        except render.ImageRejected:
            pass  # a refusal is always the whole file's: a cut structure may look worse
        else:
            if head.width and head.height:
                return head
    return formats.measure(data, limits)
