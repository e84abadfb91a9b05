"""One render process, started by the fork server with an environment free of secrets, and the
pipe to it; and what runs inside it (``_serve``)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext, ForkServerProcess

from imaging_service import render
from imaging_service.errors import RenderUnavailable

log = logging.getLogger(__name__)

_STOP_SECONDS = 5.0
# What a render process may see of the service's environment: what the C library and Python read
# for themselves, never the service's settings (credentials, URLs, tokens).
_RENDER_ENVIRONMENT = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR"})
_RENDER_ENVIRONMENT_PREFIXES = ("LC_", "PYTHON", "MALLOC_")
_ENVIRONMENT_LOCK = threading.Lock()

_Job = tuple[bytes, tuple[int, ...], render.Limits]


class Worker:
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
        with environment_for_renders():  # starts the fork server again if it has died
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
def environment_for_renders() -> Iterator[None]:
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
