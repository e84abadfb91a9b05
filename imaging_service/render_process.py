"""One render process, started by the fork server with an environment free of secrets, the pipe
and the exchange file to it; and what runs inside it (``_serve``).

The bytes of an image and of its thumbnails go through the exchange file, a memfd (an anonymous
file in memory) that the service creates for each render process and hands to it over the pipe;
the pipe carries only their lengths and offsets. Pickled through the pipe, a 12 MP original was
copied five times on its way and crossed the socket in chunks of a few hundred KB, each a wake-up
of the render process.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from multiprocessing import reduction
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
# The exchange file keeps its pages between renders up to this size (a phone JPEG and the
# thumbnails fit); past it, it is emptied after the render.
_EXCHANGE_KEPT_BYTES = 8 * 1024 * 1024
# A render process hands the memory malloc keeps free back to the system (malloc_trim) after a
# render that left it above this. Pillow's large buffers go back by themselves (glibc maps them
# apart): a process is at 45 MiB after a render that peaked at 835 MiB. What stays is the heap
# that mid-sized buffers fragment, slowly (bench/soak.py).
TRIM_ABOVE_BYTES = 128 * 1024 * 1024

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")

_Job = tuple[bytes, tuple[int, ...], render.Limits]
# What the service sends for a job: the image's length in the exchange file, sizes, limits.
_Request = tuple[int, tuple[int, ...], render.Limits]
# What a render process answers: (True, [(size, offset, length) of each PNG in the exchange
# file]) or (False, the exception the render raised).
_Reply = tuple[bool, object]


class Worker:
    """One render process, the pipe and the exchange file to it; used by one thread at a time."""

    def __init__(self, context: ForkServerContext, max_tasks: int) -> None:
        self._context = context
        self._max_tasks = max_tasks
        self._process: ForkServerProcess | None = None
        self._connection: Connection | None = None
        self._exchange: int | None = None  # the memfd shared with the process
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
            connection, exchange = self._ready()
        except OSError as exc:
            raise RenderUnavailable(f"could not start a render process: {exc}") from exc
        data, sizes, limits = job
        try:
            _write(exchange, data)
        except OSError as exc:  # out of memory for the exchange file: the process is fine
            raise RenderUnavailable(f"could not hand the image over: {exc}") from exc
        request: _Request = (len(data), sizes, limits)
        try:
            connection.send(request)
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
        try:
            rendered = _thumbnails(exchange, result) if ok else None
        finally:
            self._done(exchange)
        if rendered is None:
            raise result  # what the render raised, pickled back
        return rendered

    def _ready(self) -> tuple[Connection, int]:
        if self._connection is None or self._exchange is None:
            self._start()
        assert self._connection is not None and self._exchange is not None
        return self._connection, self._exchange

    def _done(self, exchange: int) -> None:
        """After each answer: the exchange file emptied if it grew large, the process replaced
        once it has done its quota."""
        with contextlib.suppress(OSError):
            if os.fstat(exchange).st_size > _EXCHANGE_KEPT_BYTES:
                os.ftruncate(exchange, 0)
        self._tasks += 1
        if self._tasks >= self._max_tasks:
            self._replace()

    def _start(self) -> None:
        exchange = os.memfd_create("render-exchange", os.MFD_CLOEXEC)
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=_serve, args=(theirs,), name="render", daemon=True)
        try:
            with environment_for_renders():  # starts the fork server again if it has died
                process.start()
        except BaseException:
            os.close(exchange)
            ours.close()
            raise
        finally:
            theirs.close()  # so that its death reads as end-of-file here
        self._process, self._connection, self._exchange = process, ours, exchange
        self._tasks, self.pid = 0, process.pid
        try:
            reduction.send_handle(ours, exchange, process.pid or 0)
        except OSError:
            self.stop()
            raise

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
        process, connection, exchange = self._process, self._connection, self._exchange
        self._process, self._connection, self._exchange, self.pid = None, None, None, None
        if connection is not None:
            connection.close()
        if exchange is not None:
            os.close(exchange)
        if process is not None:
            process.join(_STOP_SECONDS)
            if process.exitcode is None:
                process.kill()
                process.join()
            process.close()


def _write(fd: int, data: bytes, offset: int = 0) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _read(fd: int, length: int, offset: int = 0) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise OSError(f"the exchange file ends after {len(data)} of {length} bytes")
    return data


def _thumbnails(exchange: int, placed: Sequence[tuple[int, int, int]]) -> list[render.Thumbnail]:
    """The PNGs a render process wrote into the exchange file, from its (size, offset, length)
    answer. A process that answers anything else, or places a PNG outside the file, is broken:
    RenderUnavailable."""
    try:
        end = os.fstat(exchange).st_size
        thumbnails = []
        for size, offset, length in placed:
            if not (offset >= 0 and length >= 0 and offset + length <= end):
                raise ValueError(f"{length} bytes at {offset} in a file of {end}")
            thumbnails.append(render.Thumbnail(size, _read(exchange, length, offset)))
    except (OSError, TypeError, ValueError) as exc:
        raise RenderUnavailable(f"a render process answered nonsense: {exc}") from exc
    return thumbnails


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
    """The render process: takes its exchange file from the pipe, then renders each job that
    arrives until the pipe closes.

    It ignores SIGINT, which a terminal sends to the whole process group: the service decides
    when renders stop, by closing the pipe. After a render that left it above TRIM_ABOVE_BYTES
    it hands the memory malloc keeps free back to the system, while the service reads the
    answer. Not after every render: the next render would fault the same pages back in, a
    fifth of a 0.3 MP render's CPU and 7% of a 12 MP one's; recycling (RenderPool) bounds what
    the allocator fragments below that line.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    trim = _malloc_trim()
    try:
        exchange = reduction.recv_handle(connection)
    except (EOFError, OSError):
        return
    while True:
        try:
            request: _Request = connection.recv()
        except EOFError:
            return
        reply = _render(exchange, *request)
        try:
            connection.send(reply)
        except OSError:  # the service is gone
            return
        except Exception as exc:  # an exception that does not pickle
            connection.send((False, RuntimeError(f"{reply[1]!r} ({exc})")))
        del reply
        if _resident_bytes() > TRIM_ABOVE_BYTES:
            trim()


def _render(exchange: int, length: int, sizes: tuple[int, ...], limits: render.Limits) -> _Reply:
    """Renders the image in the exchange file and writes the PNGs there in its place."""
    try:
        data = _read(exchange, length)
    except OSError as exc:
        return False, RenderUnavailable(f"could not read the image: {exc}")
    try:
        thumbnails = render.render(data, sizes, limits)
    except Exception as exc:
        return False, exc
    del data
    try:
        return True, _place(exchange, thumbnails)
    except OSError as exc:
        return False, RenderUnavailable(f"could not write the thumbnails: {exc}")


def _place(exchange: int, thumbnails: Sequence[render.Thumbnail]) -> list[tuple[int, int, int]]:
    placed, offset = [], 0
    for thumbnail in thumbnails:
        _write(exchange, thumbnail.png, offset)
        placed.append((thumbnail.size, offset, len(thumbnail.png)))
        offset += len(thumbnail.png)
    return placed


def _resident_bytes() -> int:
    """This process's resident memory; TRIM_ABOVE_BYTES + 1 where /proc cannot tell, so that it
    trims as it did after every render."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return TRIM_ABOVE_BYTES + 1


def _malloc_trim() -> Callable[[], object]:
    """glibc's malloc_trim(0), or nothing where the C library has none."""
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: malloc_trim(0)
