"""Start, stop and restart local servers (NATS, SeaweedFS S3, PostgreSQL) and service processes."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TextIO

import psycopg
from minio import Minio
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

LOCALHOST = "127.0.0.1"
START_TIMEOUT = 60.0
_POLL_INTERVAL = 0.05
_KILL_WAIT = 5.0
_LOG_TAIL_LINES = 20
_ECHO_LOCK = threading.Lock()
# Infrastructure gets a clean environment: weed mini, for one, reads S3_BUCKET and S3_EXTERNAL_URL.
_INFRA_ENV = {"PATH": os.defpath}

ExitCallback = Callable[["ServiceProcess"], None]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (someone may still take it)."""
    return _free_ports(1)[0]


def _free_ports(count: int) -> list[int]:
    """`count` distinct free ports: every socket stays bound until all are picked."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sockets.append(sock)
            sock.bind((LOCALHOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return False
    return True


def port_open(host: str, port: int) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate` until it is true; TimeoutError naming `what` after `timeout` seconds.

    Exceptions from `predicate` propagate at once (use them for "this will never happen").
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not ready after {timeout:g} s")
        time.sleep(_POLL_INTERVAL)


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


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_ok(url: str) -> bool:
    try:
        with _NO_PROXY_OPENER.open(url, timeout=1.0) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def _sibling_log(directory: Path) -> Path:
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
        uid, gid = _ids_of(self._user)
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


def _ids_of(user: str | None) -> tuple[int | None, int | None]:
    if user is None:
        return None, None
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def _start_and_wait(
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


class NatsServer:
    """nats-server with JetStream on 127.0.0.1; `restart()` keeps the port and stored streams."""

    def __init__(
        self,
        store_dir: Path,
        port: int | None = None,
        monitor_port: int | None = None,
        *,
        log_path: Path | None = None,
        echo: TextIO | None = None,
        on_exit: ExitCallback | None = None,
    ) -> None:
        picked = _free_ports(2)
        self.store_dir = store_dir
        self.port = port or picked[0]
        self.monitor_port = monitor_port or picked[1]
        argv = [find_binary("nats-server"), "-a", LOCALHOST, "-p", str(self.port), "-js",
                "-sd", str(store_dir), "-m", str(self.monitor_port)]  # fmt: skip
        self.process = ServiceProcess(
            "nats", argv, log_path=log_path or _sibling_log(store_dir),
            env=_INFRA_ENV, echo=echo, on_exit=on_exit,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"nats://{LOCALHOST}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{LOCALHOST}:{self.monitor_port}"

    def start(self) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        ports = [self.port, self.monitor_port]
        _start_and_wait(self.process, ports, self._healthy, f"nats-server at {self.url}")

    def _healthy(self) -> bool:
        # /healthz answers 200 only once JetStream is up and its stored streams are loaded.
        return port_open(LOCALHOST, self.port) and _http_ok(f"{self.monitor_url}/healthz")

    def stop(self, timeout: float = 10.0) -> None:
        self.process.terminate(timeout)

    def kill(self) -> None:
        self.process.kill()

    def restart(self) -> None:
        self.stop()
        self.start()


_WEED_COMPONENTS = ("s3", "master", "volume", "filer", "admin")
_WEED_PORT_FLAGS = tuple(
    f"{name}.port{kind}" for name in _WEED_COMPONENTS for kind in ("", ".grpc")
)
# weed's own convention: gRPC port = HTTP port + 10000. The mini worker dials admin.port + 10000
# whatever -admin.port.grpc says, so every pair follows it where it can.
_WEED_GRPC_OFFSET = 10000
_WEED_PORTS_FILE = "devstack.ports"
_WEED_SOCKET_DIR = Path("/tmp")  # weed's default for its unix sockets


def _weed_ports(s3_port: int | None) -> dict[str, int]:
    """Flag name -> port (`s3.port`, `s3.port.grpc`, ...) for every weed mini component."""
    ports: dict[str, int] = {}
    for component in _WEED_COMPONENTS:
        http = s3_port if component == "s3" and s3_port else _offset_pair_port(set(ports.values()))
        grpc = http + _WEED_GRPC_OFFSET
        if grpc in ports.values() or grpc > 65535 or not _bindable(grpc):
            grpc = _fresh_port(set(ports.values()) | {http})
        ports[f"{component}.port"] = http
        ports[f"{component}.port.grpc"] = grpc
    return ports


def _saved_weed_ports(data_dir: Path, s3_port: int | None) -> dict[str, int] | None:
    """The ports of the last run in `data_dir`, if all free: weed keeps master state per port."""
    record = data_dir / _WEED_PORTS_FILE
    if not record.is_file():
        return None
    saved: dict[str, int] = {}
    for line in record.read_text().splitlines():
        key, _, value = line.partition("=")
        if key in _WEED_PORT_FLAGS and value.isdigit():
            saved[key] = int(value)
    if saved.keys() != set(_WEED_PORT_FLAGS) or s3_port not in (None, saved["s3.port"]):
        return None
    return saved if all(_bindable(port) for port in saved.values()) else None


def _offset_pair_port(taken: set[int]) -> int:
    while True:
        port = _fresh_port(taken)
        grpc = port + _WEED_GRPC_OFFSET
        if grpc <= 65535 and grpc not in taken and _bindable(grpc):
            return port


def _fresh_port(taken: set[int]) -> int:
    while (port := free_port()) in taken:
        pass
    return port


class S3Server:
    """SeaweedFS `weed mini` serving S3 on 127.0.0.1; `restart()` keeps the data and every port."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        access_key: str = "minioadmin",
        secret_key: str = "minioadmin",
        *,
        log_path: Path | None = None,
        echo: TextIO | None = None,
        on_exit: ExitCallback | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.ports = _saved_weed_ports(data_dir, port) or _weed_ports(port)
        self.access_key = access_key
        self.secret_key = secret_key
        env = {**_INFRA_ENV, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
        self.process = ServiceProcess(
            "s3", self._argv(), log_path=log_path or _sibling_log(data_dir),
            env=env, echo=echo, on_exit=on_exit,
        )  # fmt: skip

    def _argv(self) -> list[str]:
        port_flags = [f"-{flag}={port}" for flag, port in self.ports.items()]
        return [
            find_binary("weed"), "mini", f"-dir={self.data_dir}",
            f"-ip={LOCALHOST}", f"-ip.bind={LOCALHOST}", *port_flags,
            "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false", "-volume.preStopSeconds=0",
        ]  # fmt: skip

    @property
    def port(self) -> int:
        return self.ports["s3.port"]

    @property
    def endpoint(self) -> str:
        """host:port, as the minio client and S3_ENDPOINT want it."""
        return f"{LOCALHOST}:{self.port}"

    def client(self) -> Minio:
        return Minio(
            self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False
        )

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Our own record: weed writes its mini.options only some time after S3 answers.
        record = "".join(f"{flag}={port}\n" for flag, port in self.ports.items())
        (self.data_dir / _WEED_PORTS_FILE).write_text(record)
        what = f"weed mini S3 at {self.endpoint}"
        _start_and_wait(self.process, list(self.ports.values()), self._serving, what)

    def _serving(self) -> bool:
        return port_open(LOCALHOST, self.port) and _s3_answers(self.client())

    def stop(self, timeout: float = 15.0) -> None:
        self.process.terminate(timeout)
        self._remove_sockets()

    def kill(self) -> None:
        self.process.kill()
        self._remove_sockets()

    def restart(self) -> None:
        self.stop()
        self.start()

    def _remove_sockets(self) -> None:
        """weed leaves /tmp/seaweedfs-<component>-<port>.sock behind; drop the ones of our ports."""
        for port in self.ports.values():
            for leftover in _WEED_SOCKET_DIR.glob(f"seaweedfs-*-{port}.sock"):
                if leftover.is_socket():
                    leftover.unlink(missing_ok=True)

    def ensure_bucket(self, name: str) -> None:
        client = self.client()
        if not client.bucket_exists(name):
            client.make_bucket(name)


def _s3_answers(client: Minio) -> bool:
    try:
        client.list_buckets()
    except Exception:  # any failure here only means "not serving S3 yet"
        return False
    return True


PG_SUPERUSER = "postgres"


def with_dbname(dsn: str, dbname: str) -> str:
    """`dsn` pointed at database `dbname`, keeping its URL or key=value form."""
    if dsn.startswith(("postgresql://", "postgres://")):
        return urllib.parse.urlsplit(dsn)._replace(path=f"/{dbname}").geturl()
    return make_conninfo(dsn, dbname=dbname)


def dsn_host_port(dsn: str) -> tuple[str, int]:
    params = conninfo_to_dict(dsn)
    return str(params.get("host") or LOCALHOST), int(params.get("port") or 5432)


class Postgres:
    """A PostgreSQL server: the one answering `reuse_dsn`, else a private cluster in `data_dir`.

    The private cluster (`initdb -A trust -U postgres`, run as the `postgres` user when we are
    root, since PostgreSQL refuses root) listens on 127.0.0.1:`port` with its socket in
    `data_dir`. `stop()` and `restart()` only ever act on a cluster this object started.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        reuse_dsn: str | None = None,
        port: int | None = None,
        log_path: Path | None = None,
        echo: TextIO | None = None,
        on_exit: ExitCallback | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.owned = False
        self.admin_dsn = reuse_dsn or self._private_dsn()
        self._reuse_dsn = reuse_dsn
        self._os_user = PG_SUPERUSER if os.geteuid() == 0 else None
        self._log_path = log_path or _sibling_log(data_dir)
        argv = [find_binary("postgres"), "-D", str(data_dir), "-p", str(self.port),
                "-k", str(data_dir), "-c", f"listen_addresses={LOCALHOST}"]  # fmt: skip
        self.process = ServiceProcess(
            "postgres", argv, log_path=self._log_path, env=_INFRA_ENV, echo=echo,
            on_exit=on_exit, stop_signal=signal.SIGINT, user=self._os_user,  # SIGINT: fast shutdown
        )  # fmt: skip

    def _private_dsn(self) -> str:
        return f"postgresql://{PG_SUPERUSER}@{LOCALHOST}:{self.port}/postgres"

    def start(self) -> None:
        if self._reuse_dsn is not None and _reusable(self._reuse_dsn):
            self.admin_dsn, self.owned = self._reuse_dsn, False
            return
        self._start_private()

    def _start_private(self) -> None:
        self._init_cluster()
        self.admin_dsn = self._private_dsn()
        what = f"private PostgreSQL in {self.data_dir} on port {self.port}"
        _start_and_wait(self.process, [self.port], lambda: _answers(self.admin_dsn), what)
        self.owned = True

    def _init_cluster(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        uid, gid = _ids_of(self._os_user)
        if uid is not None and gid is not None:
            os.chown(self.data_dir, uid, gid)
        argv = [find_binary("initdb"), "-D", str(self.data_dir), "-A", "trust", "-U", PG_SUPERUSER,
                "-E", "UTF8", "--no-locale", "--no-sync"]  # fmt: skip
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("ab") as log:
            result = subprocess.run(
                argv, env=_INFRA_ENV, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, user=uid, group=gid,
                extra_groups=None if uid is None else [], check=False,
            )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed with code {result.returncode}, see {self._log_path}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.owned:
            self.process.terminate(timeout)

    def kill(self) -> None:
        if self.owned:
            self.process.kill()

    def restart(self) -> None:
        if not self.owned:
            raise RuntimeError("will not restart a PostgreSQL server devstack did not start")
        self.stop()
        self._start_private()

    def dsn_for(self, dbname: str) -> str:
        return with_dbname(self.admin_dsn, dbname)

    def create_database(self, name: str, *, exist_ok: bool = False) -> str:
        """Create database `name` and return a DSN for it."""
        with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=5) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not (found and exist_ok):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name` if it exists, ending its other connections first."""
        with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=5) as conn:
            query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(query.format(sql.Identifier(name)))


def _answers(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def _reusable(dsn: str) -> bool:
    """True if a server answers `dsn`; False if nothing listens; RuntimeError if it refuses us."""
    host, port = dsn_host_port(dsn)
    if not port_open(host, port):
        return False
    try:
        with psycopg.connect(dsn, connect_timeout=5):
            return True
    except psycopg.Error as exc:
        raise RuntimeError(f"a server listens on {host}:{port} but refuses {dsn!r}: {exc}") from exc
