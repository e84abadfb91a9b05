"""Child processes in their own session, their logs, and starting one until it is ready."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TextIO

from devstack.net import LOCALHOST, port_open, wait_until

START_TIMEOUT = 60.0
_KILL_WAIT = 5.0
_LOG_TAIL_LINES = 20
_ECHO_LOCK = threading.Lock()
# Infrastructure gets a clean environment: weed mini, for one, reads S3_BUCKET and S3_EXTERNAL_URL.
INFRA_ENV = {"PATH": os.defpath}

ExitCallback = Callable[["ServiceProcess"], None]


def find_binary(name: str) -> str:
    """`name` next to the running interpreter (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is neither next to {sys.executable} nor on PATH")
    return found


def echo_line(out: TextIO, name: str, line: str) -> None:
    """Write one `[name] line` to `out`; lines from several threads never interleave."""
    with _ECHO_LOCK:
        out.write(f"[{name}] {line.rstrip()}\n")
        out.flush()


def sibling_log(directory: Path) -> Path:
    return directory.parent / f"{directory.name}.log"


class ProcessExited(RuntimeError):
    """A child process ended while it was expected to keep running."""

    def __init__(self, process: ServiceProcess, detail: str) -> None:
        super().__init__(f"{process.name} {detail}")
        self.process = process


class ServiceProcess:
    """One child process in its own session, stdout+stderr appended to `log_path`.

    `env` is the child's whole environment (None: inherit ours). With `echo`, every output line
    is also written to it as `[name] line`. `on_exit` is called from a watcher thread when the
    process ends without `terminate()` or `kill()` having been asked for: that is a crash.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        echo: TextIO | None = None,
        on_exit: ExitCallback | None = None,
        stop_signal: int = signal.SIGTERM,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._env = env
        self._cwd = cwd
        self._echo = echo
        self._on_exit = on_exit
        self._stop_signal = stop_signal
        self._user = user
        self._popen: subprocess.Popen[bytes] | None = None
        self._exited = threading.Event()
        self._stop_requested = False
        self._threads: list[threading.Thread] = []

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.returncode

    @property
    def running(self) -> bool:
        return self._popen is not None and not self._exited.is_set()

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._exited.clear()
        self._stop_requested = False
        uid, gid = ids_of(self._user)
        with self.log_path.open("ab") as log:
            popen = subprocess.Popen(
                self.argv,
                env=self._env,
                cwd=self._cwd,
                stdin=subprocess.DEVNULL,
                stdout=log if self._echo is None else subprocess.PIPE,
                stderr=subprocess.STDOUT,
                # Own session: a terminal's Ctrl-C reaches only us, and we stop children in order.
                start_new_session=True,
                user=uid,
                group=gid,
                extra_groups=None if uid is None else [],
            )
        self._popen = popen
        self._threads = [_daemon(self._watch, popen)]
        if self._echo is not None and popen.stdout is not None:
            self._threads.append(_daemon(self._pump, popen.stdout, self._echo))

    def check_running(self) -> None:
        """Raise ProcessExited, with the end of the log, unless the process is running."""
        if self._popen is None:
            raise ProcessExited(self, "was never started")
        if self._exited.is_set():
            tail = self.log_tail()
            raise ProcessExited(
                self, f"exited with code {self.returncode}; {self.log_path}:\n{tail}"
            )

    def terminate(self, timeout: float = 10.0) -> int | None:
        """Stop signal, wait `timeout` s, then SIGKILL the process group; returns the exit code."""
        if not self.running:
            return self.returncode
        self._stop_requested = True
        self._signal(self._stop_signal, group=False)
        if not self._exited.wait(timeout):
            self._signal(signal.SIGKILL, group=True)
            self._exited.wait(_KILL_WAIT)
        self._join()
        return self.returncode

    def kill(self) -> None:
        """SIGKILL the process and everything in its process group."""
        if not self.running:
            return
        self._stop_requested = True
        self._signal(signal.SIGKILL, group=True)
        self._exited.wait(_KILL_WAIT)
        self._join()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _signal(self, signum: int, *, group: bool) -> None:
        if self._popen is None or self._exited.is_set():
            return
        try:
            if group:
                os.killpg(self._popen.pid, signum)
            else:
                os.kill(self._popen.pid, signum)
        except ProcessLookupError:
            pass

    def _watch(self, popen: subprocess.Popen[bytes]) -> None:
        popen.wait()
        self._exited.set()
        if not self._stop_requested and self._on_exit is not None:
            self._on_exit(self)

    def _pump(self, stream: IO[bytes], out: TextIO) -> None:
        with stream, self.log_path.open("ab") as log:
            for raw in stream:
                log.write(raw)
                log.flush()
                echo_line(out, self.name, raw.decode(errors="replace"))

    def _join(self) -> None:
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(_KILL_WAIT)


def _daemon(target: Callable[..., None], *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def ids_of(user: str | None) -> tuple[int | None, int | None]:
    if user is None:
        return None, None
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def start_and_wait(
    process: ServiceProcess, ports: Sequence[int], ready: Callable[[], bool], what: str
) -> None:
    """Start `process` once its ports are free, wait for `ready`; on failure kill it and raise."""
    taken = [port for port in ports if port_open(LOCALHOST, port)]
    if taken:
        raise RuntimeError(f"cannot start {what}: port(s) {taken} already in use")
    process.start()

    def alive_and_ready() -> bool:
        process.check_running()
        return ready()

    try:
        wait_until(alive_and_ready, START_TIMEOUT, what)
    except TimeoutError as exc:
        process.kill()
        raise TimeoutError(f"{exc}; end of {process.log_path}:\n{process.log_tail()}") from None
    except BaseException:
        process.kill()
        raise
