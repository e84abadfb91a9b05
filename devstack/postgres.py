"""PostgreSQL: reuse a running server or start a private cluster; DSN helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.parse
from pathlib import Path
from typing import TextIO

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devstack.net import LOCALHOST, free_port, port_open
from devstack.process import (
    INFRA_ENV,
    ExitCallback,
    ServiceProcess,
    find_binary,
    ids_of,
    sibling_log,
    start_and_wait,
)

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
        self._log_path = log_path or sibling_log(data_dir)
        argv = [find_binary("postgres"), "-D", str(data_dir), "-p", str(self.port),
                "-k", str(data_dir), "-c", f"listen_addresses={LOCALHOST}"]  # fmt: skip
        self.process = ServiceProcess(
            "postgres", argv, log_path=self._log_path, env=INFRA_ENV, echo=echo,
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
        start_and_wait(self.process, [self.port], lambda: _answers(self.admin_dsn), what)
        self.owned = True

    def _init_cluster(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        uid, gid = ids_of(self._os_user)
        if uid is not None and gid is not None:
            os.chown(self.data_dir, uid, gid)
        argv = [find_binary("initdb"), "-D", str(self.data_dir), "-A", "trust", "-U", PG_SUPERUSER,
                "-E", "UTF8", "--no-locale", "--no-sync"]  # fmt: skip
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("ab") as log:
            result = subprocess.run(
                argv, env=INFRA_ENV, stdin=subprocess.DEVNULL, stdout=log,
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
