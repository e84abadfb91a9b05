"""Render processes for the pure renderer: recycled, isolated from each other, admitted by cost."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext, ForkServerProcess

from imaging_service import formats, render
from imaging_service.errors import RenderUnavailable

log = logging.getLogger(__name__)

MAX_TASKS_PER_CHILD = 500
# The peak memory of a render, per decoded megapixel, measured on 50 MP sources: WebP with alpha
# 18.3 MB (916 MB), WebP 15.8, PNG RGBA 11.8, AVIF 9.3, progressive CMYK JPEG 8.2, 16-bit grey
# PNG 7.1, palette PNG 6.2, GIF 4.4, baseline JPEG 0.8 (decoded at 1/8 scale). 80 MP in flight
# keeps the worst case near 1.5 GB of renders, within imaging's 2 GiB with the main process;
# it lets a 50 MP avatar render beside a 30 MP one, or six 12 MP ones at once.
MAX_MEGAPIXELS_IN_FLIGHT = 80
_STOP_SECONDS = 5.0
# What a render process may see of the service's environment: what the C library and Python read
# for themselves, never the service's settings (credentials, URLs, tokens).
_RENDER_ENVIRONMENT = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR"})
_RENDER_ENVIRONMENT_PREFIXES = ("LC_", "PYTHON", "MALLOC_")
_ENVIRONMENT_LOCK = threading.Lock()

_Job = tuple[bytes, tuple[int, ...], render.Limits]


@dataclass(frozen=True)
class RenderBudget:
    """The wall-clock time a render may take, in seconds: ``floor`` plus ``per_megapixel`` for
    each decoded megapixel. The defaults are about four times what a render of that size costs
    with two at once on a busy 2-core machine: 50 MP at most 2.2 s alone (PNG RGBA), so 15 s."""

    floor: float = 5.0
    per_megapixel: float = 0.2

    def __post_init__(self) -> None:
        if not (self.floor > 0 and self.per_megapixel >= 0):
            raise ValueError(f"a render budget needs a positive floor, got {self}")

    def seconds(self, megapixels: float) -> float:
        return self.floor + self.per_megapixel * max(megapixels, 0.0)


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
    fork server they come from) start with the environment reduced to _RENDER_ENVIRONMENT.
    """

    def __init__(
        self,
        processes: int,
        limits: render.Limits,
        *,
        max_tasks_per_child: int = MAX_TASKS_PER_CHILD,
        max_megapixels_in_flight: float = MAX_MEGAPIXELS_IN_FLIGHT,
        budget: RenderBudget = RenderBudget(),
    ) -> None:
        if processes < 1 or max_tasks_per_child < 1:
            raise ValueError("processes and max_tasks_per_child must be at least 1")
        self.processes = processes
        self.budget = budget
        self._limits = limits
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["imaging_service.render", "imaging_service.pool"])
        # Now, while the service has hardly any threads: see _environment_for_renders.
        with _environment_for_renders():
            multiprocessing.forkserver.ensure_running()
        self._workers = [_Worker(context, max_tasks_per_child) for _ in range(processes)]
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
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
        """The bounded structural pre-scan of ``data``, in a thread; raises render.ImageRejected.

        Never Pillow: what a render process parses is never parsed in this process."""
        return await asyncio.to_thread(formats.measure, data, self._limits)

    async def render(
        self,
        data: bytes,
        sizes: Sequence[int] = render.DEFAULT_SIZES,
        measured: formats.Structure | None = None,
    ) -> list[render.Thumbnail]:
        """Renders ``data`` in a render process; ``measured`` is its ``measure``, taken here
        when not given. Raises render.ImageRejected (bad input: from the pre-scan, before any
        process is used, or from decoding; TOO_COMPLEX past the time budget), ValueError (bad
        ``sizes``) or RenderUnavailable (the process died during this render, or the pool is
        closed: worth a retry)."""
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

    def _finished(self, worker: _Worker, cost: float) -> None:
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


class MegapixelBudget:
    """Admission by cost, in arrival order: ``acquire(cost)`` returns once the costs acquired and
    not yet released leave room for ``cost`` within ``capacity`` and every earlier caller has been
    admitted. A cost above the whole capacity counts as the capacity: it runs alone, not never."""

    def __init__(self, capacity: float) -> None:
        if not capacity > 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.in_use = 0.0
        self._waiting: collections.deque[tuple[float, asyncio.Future[None]]] = collections.deque()

    async def acquire(self, cost: float) -> float:
        """Returns the cost to ``release`` later."""
        cost = min(cost, self.capacity)
        if not self._waiting and self._fits(cost):
            self.in_use += cost
            return cost
        turn = asyncio.get_running_loop().create_future()
        entry = (cost, turn)
        self._waiting.append(entry)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release(cost)  # admitted just as the caller was cancelled
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(entry)
                self._admit()  # the next in line may fit now
            raise
        return cost

    def release(self, cost: float) -> None:
        self.in_use = max(self.in_use - cost, 0.0)
        self._admit()

    def _fits(self, cost: float) -> bool:
        return self.in_use + cost <= self.capacity * (1 + 1e-9)  # sums of floats

    def _admit(self) -> None:
        while self._waiting and self._fits(self._waiting[0][0]):
            cost, turn = self._waiting.popleft()
            if not turn.done():
                self.in_use += cost
                turn.set_result(None)


class _Worker:
    """One render process and the pipe to it; used by one thread at a time."""

    def __init__(self, context: ForkServerContext, max_tasks: int) -> None:
        self._context = context
        self._max_tasks = max_tasks
        self._process: ForkServerProcess | None = None
        self._connection: Connection | None = None
        self._tasks = 0
        self.pid: int | None = None

    def run(self, job: _Job, seconds: float, megapixels: float) -> list[render.Thumbnail]:
        """Blocks until the process answers, ``seconds`` at most; raises what the render raised,
        RenderUnavailable if the process died, or ImageRejected TOO_COMPLEX if the time ran out
        (the process is killed then, and replaced)."""
        if self._connection is not None and self._connection.poll():
            # An idle process never writes: this is the end of file of one that died (killed
            # from outside) since its last job. This job has not started; it gets a new process.
            self._reap()
        try:
            connection = self._connection or self._start()
        except OSError as exc:
            raise RenderUnavailable(f"could not start a render process: {exc}") from exc
        try:
            connection.send(job)
            if not connection.poll(seconds):
                self._kill(seconds, megapixels)
                raise render.ImageRejected(
                    "TOO_COMPLEX",
                    f"the render took longer than its budget of {seconds:.1f} s "
                    f"for {megapixels:.1f} MP",
                )
            ok, result = connection.recv()
        except (EOFError, OSError) as exc:
            exitcode = self._reap()
            raise RenderUnavailable(f"the render process died (exit code {exitcode})") from exc
        self._tasks += 1
        if self._tasks >= self._max_tasks:
            self._replace()
        if not ok:
            raise result
        rendered: list[render.Thumbnail] = result
        return rendered

    def _start(self) -> Connection:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=_serve, args=(theirs,), name="render", daemon=True)
        with _environment_for_renders():  # starts the fork server again if it has died
            process.start()
        theirs.close()  # so that its death reads as end-of-file here
        self._process, self._connection, self._tasks, self.pid = process, ours, 0, process.pid
        return ours

    def _replace(self) -> None:
        """A fresh process in place of this one, ready before the next render."""
        self.stop()
        try:
            self._start()
        except OSError as exc:  # the next render tries again
            log.warning("could not start a render process", extra={"error": str(exc)})

    def _kill(self, seconds: float, megapixels: float) -> None:
        """SIGKILL: a render past its budget may be stuck in C code that no signal interrupts."""
        if self._process is not None:
            self._process.kill()
        log.warning(
            "render over its time budget, process killed",
            extra={"pid": self.pid, "budget_s": round(seconds, 1), "megapixels": megapixels},
        )
        self._replace()

    def _reap(self) -> int | None:
        process, pid = self._process, self.pid
        exitcode = None
        if process is not None:
            process.join(_STOP_SECONDS)
            exitcode = process.exitcode
        self.stop()
        log.error("a render process died", extra={"pid": pid, "exitcode": exitcode})
        return exitcode

    def stop(self) -> None:
        """Closing the pipe ends the process once it has answered its job; waits for that."""
        process, connection = self._process, self._connection
        self._process, self._connection, self.pid = None, None, None
        if connection is not None:
            connection.close()
        if process is not None:
            process.join(_STOP_SECONDS)
            if process.exitcode is None:
                process.kill()
                process.join()
            process.close()


@contextlib.contextmanager
def _environment_for_renders() -> Iterator[None]:
    """os.environ reduced to _RENDER_ENVIRONMENT for a moment, then restored.

    The fork server is a new program started with this process's environment of the moment, and
    render processes are forked from it: their /proc/<pid>/environ is the fork server's, whatever
    they do later. So it starts under this (in RenderPool's constructor, and again from a render
    thread if it ever died). Other threads see the reduced environment meanwhile; the ones that
    read it (gRPC, TLS, the S3 client) do so when they are set up, not while rendering.
    """
    with _ENVIRONMENT_LOCK:
        withheld = {
            name: value
            for name, value in os.environ.items()
            if name not in _RENDER_ENVIRONMENT and not name.startswith(_RENDER_ENVIRONMENT_PREFIXES)
        }
        for name in withheld:
            del os.environ[name]
        try:
            yield
        finally:
            os.environ.update(withheld)


def _serve(connection: Connection) -> None:
    """The render process: renders each job that arrives until the pipe closes.

    It ignores SIGINT, which a terminal sends to the whole process group: the service decides
    when renders stop, by closing the pipe. After each answer it hands the memory malloc keeps
    free back to the system, while the service reads the answer: without that, bench/soak.py
    measured a process 31% larger after 5,000 renders than after 500.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    trim = _malloc_trim()
    while True:
        try:
            data, sizes, limits = connection.recv()
        except EOFError:
            return
        try:
            reply: tuple[bool, object] = (True, render.render(data, sizes, limits))
        except Exception as exc:
            reply = (False, exc)
        try:
            connection.send(reply)
        except OSError:  # the service is gone
            return
        except Exception as exc:  # an exception that does not pickle
            connection.send((False, RuntimeError(f"{reply[1]!r} ({exc})")))
        del data, reply
        trim()


def _malloc_trim() -> Callable[[], object]:
    """glibc's malloc_trim(0), or nothing where the C library has none."""
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: malloc_trim(0)
