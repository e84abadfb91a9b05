"""`python -m devstack run`: the whole stack in the foreground, stopped by Ctrl-C (make run)."""

from __future__ import annotations

import argparse
import os
import queue
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TextIO

from psycopg.conninfo import conninfo_to_dict

from devstack.nats import NatsServer
from devstack.net import LOCALHOST, port_open, wait_until
from devstack.postgres import Postgres, dsn_host_port, with_dbname
from devstack.process import START_TIMEOUT, ProcessExited, ServiceProcess, echo_line
from devstack.s3 import S3Server

BUCKET = "avatars"
S3_KEY = "minioadmin"
ACCOUNTS_PORT = 50051
IMAGING_PORT = 50052
SERVICE_GRACE = 22.0  # the services drain for up to 20 s (SHUTDOWN_GRACE_SECONDS) before exiting
INFRA_GRACE = 5.0


@dataclass(frozen=True)
class RunSettings:
    repo: Path
    nats_port: int
    s3_port: int
    database_url: str
    internal_token: str = field(repr=False)

    @property
    def run_dir(self) -> Path:
        return self.repo / ".run"

    @property
    def database_name(self) -> str:
        name = conninfo_to_dict(self.database_url).get("dbname")
        if not name:
            raise RuntimeError(f"DATABASE_URL {self.database_url!r} names no database")
        return str(name)

    @classmethod
    def from_env(cls, env: Mapping[str, str], repo: Path) -> RunSettings:
        return cls(
            repo=repo,
            nats_port=_port(env, "RUN_NATS_PORT", 4322),
            s3_port=_port(env, "RUN_S3_PORT", 9000),
            database_url=env.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/avatars"),
            internal_token=env.get("INTERNAL_TOKEN", "dev-internal-token"),
        )


def _port(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SystemExit(f"{key} must be a TCP port number, got {raw!r}")
    return int(raw)


class StopRequested(BaseException):
    """SIGINT, SIGTERM or SIGHUP arrived; raised from the signal handler in the main thread."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    _handle_stop_signals(signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
    raise StopRequested(signum)


def _handle_stop_signals(handler: Callable[[int, FrameType | None], None] | int) -> None:
    # Set explicitly: a background job of a non-interactive shell starts with SIGINT ignored.
    # SIGHUP too: the children have their own sessions and would outlive a closed terminal.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


@dataclass
class Stack:
    """What `run` started, stopped services first (in parallel), then infrastructure."""

    out: TextIO
    services: list[ServiceProcess] = field(default_factory=list)
    infra: list[NatsServer | S3Server | Postgres] = field(default_factory=list)

    def say(self, line: str) -> None:
        echo_line(self.out, "devstack", line)

    def stop(self) -> None:
        self._all_at_once([partial(proc.terminate, SERVICE_GRACE) for proc in self.services])
        self._all_at_once([partial(server.stop, INFRA_GRACE) for server in self.infra])

    def _all_at_once(self, calls: Sequence[Callable[[], object]]) -> None:
        with ThreadPoolExecutor() as pool:
            futures = [pool.submit(call) for call in calls]
        for future in futures:
            if (exc := future.exception()) is not None:
                self.say(f"could not stop cleanly: {exc!r}")


def run(settings: RunSettings, base_env: Mapping[str, str], out: TextIO) -> int:
    """Start everything, wait for a signal or a crash, stop everything; returns the exit code."""
    crashes: queue.SimpleQueue[str] = queue.SimpleQueue()

    def crashed(proc: ServiceProcess) -> None:
        crashes.put(f"{proc.name} exited unexpectedly with code {proc.returncode}")

    stack = Stack(out)
    reason, code = "start-up failed", 1
    _handle_stop_signals(_raise_stop)
    try:
        _start_all(settings, base_env, stack, crashed)
        reason = crashes.get()
    except StopRequested as stop:
        reason, code = f"received {stop}", 0
    except ProcessExited as exc:  # its output was echoed already
        proc = exc.process
        reason = f"start-up failed: {proc.name} exited with code {proc.returncode}"
    except (TimeoutError, RuntimeError, OSError) as exc:
        reason = f"start-up failed: {exc}"
    finally:
        _handle_stop_signals(signal.SIG_IGN)
        stack.say(f"{reason}; stopping everything")
        stack.stop()
        stack.say(f"all processes stopped (exit code {code})")
    return code


def _start_all(
    settings: RunSettings,
    base_env: Mapping[str, str],
    stack: Stack,
    crashed: Callable[[ServiceProcess], None],
) -> None:
    run_dir, out = settings.run_dir, stack.out
    nats = NatsServer(run_dir / "nats", port=settings.nats_port, echo=out, on_exit=crashed)
    stack.infra.append(nats)
    nats.start()
    s3 = S3Server(run_dir / "s3", port=settings.s3_port, echo=out, on_exit=crashed)
    stack.infra.append(s3)
    s3.start()
    s3.ensure_bucket(BUCKET)
    pg = _postgres(settings, out, crashed)
    stack.infra.append(pg)
    pg.start()
    pg.create_database(settings.database_name, exist_ok=True)
    env = {**base_env, **_service_env(settings, nats.url, s3.endpoint)}
    for name, port in (("accounts", ACCOUNTS_PORT), ("imaging", IMAGING_PORT)):
        if port_open(LOCALHOST, port):
            raise RuntimeError(f"port {port} for {name} is already in use")
        proc = ServiceProcess(
            name, [sys.executable, "-m", f"{name}_service"], env=env, cwd=settings.repo,
            log_path=run_dir / f"{name}.log", echo=out, on_exit=crashed,
        )  # fmt: skip
        stack.services.append(proc)
        proc.start()
    for proc, port in zip(stack.services, (ACCOUNTS_PORT, IMAGING_PORT), strict=True):
        _wait_for_port(proc, port)
    _banner(stack, nats, s3, pg, settings)


def _postgres(
    settings: RunSettings, out: TextIO, crashed: Callable[[ServiceProcess], None]
) -> Postgres:
    """The server at $DATABASE_URL's host:port if one answers, else a private one on that port."""
    _, port = dsn_host_port(settings.database_url)
    admin_dsn = with_dbname(settings.database_url, "postgres")
    return Postgres(
        settings.run_dir / "pg", reuse_dsn=admin_dsn, port=port, echo=out, on_exit=crashed
    )


def _service_env(settings: RunSettings, nats_url: str, s3_endpoint: str) -> dict[str, str]:
    return {
        "DATABASE_URL": settings.database_url,
        "NATS_URL": nats_url,
        "S3_ENDPOINT": s3_endpoint,
        "S3_ACCESS_KEY": S3_KEY,
        "S3_SECRET_KEY": S3_KEY,
        "S3_BUCKET": BUCKET,
        "S3_SECURE": "false",
        "INTERNAL_TOKEN": settings.internal_token,
        "ACCOUNTS_ADDR": f"{LOCALHOST}:{ACCOUNTS_PORT}",
        "ACCOUNTS_PORT": str(ACCOUNTS_PORT),
        "IMAGING_PORT": str(IMAGING_PORT),
        "PYTHONUNBUFFERED": "1",  # log lines show up as they happen
    }


def _wait_for_port(proc: ServiceProcess, port: int) -> None:
    def listening() -> bool:
        proc.check_running()
        return port_open(LOCALHOST, port)

    wait_until(listening, START_TIMEOUT, f"{proc.name} on {LOCALHOST}:{port}")


def _banner(stack: Stack, nats: NatsServer, s3: S3Server, pg: Postgres, s: RunSettings) -> None:
    where = f"private cluster in {pg.data_dir}" if pg.owned else "existing server, reused"
    for line in (
        "stack is up (Ctrl-C stops everything):",
        f"  NATS        {nats.url}  (monitoring {nats.monitor_url})",
        f"  S3          http://{s3.endpoint}  bucket {BUCKET}, key {S3_KEY}/{S3_KEY}",
        f"  PostgreSQL  {s.database_url}  ({where})",
        f"  accounts    {LOCALHOST}:{ACCOUNTS_PORT}",
        f"  imaging     {LOCALHOST}:{IMAGING_PORT}",
        f"  logs        {s.run_dir}/*.log",
    ):
        stack.say(line)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="start the local stack in the foreground (make run)")
    parser.parse_args(argv)
    repo = Path(__file__).resolve().parent.parent
    return run(RunSettings.from_env(os.environ, repo), os.environ, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
