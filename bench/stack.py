"""A private stack for bench scripts: NATS, S3 (weed mini), PostgreSQL and service processes.

    with stack("load-", services=("accounts",)) as s:
        s.start_service("inline", [sys.executable, "bench/inline_accounts.py"], env={...})

    with stack("cluster-", nats_nodes=3, replicas={"accounts": 2, "imaging": 3}) as s:
        s.replicas("imaging")  # ["imaging-0", "imaging-1", "imaging-2"]

Everything runs on free ports in temporary folders, with a private PostgreSQL cluster (so that
chaos may restart it and benchmarks do not share a server with other people's tests). Services
are started in order and waited for until their health service answers SERVING; on exit they
are stopped in reverse order, then the servers. The root folder (logs) is left for the caller
to remove, so that a failed run can keep it.

With `nats_nodes` > 1, NATS is a routed cluster (`Stack.nats` a NatsCluster, NATS_URL every
member). With `replicas`, a service runs as that many processes named `accounts-0`,
`accounts-1`, ..., each on its own port with its own log; ACCOUNTS_ADDR then names every
accounts replica (`ipv4:127.0.0.1:A,127.0.0.1:B`), for clients that balance round robin.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.nats import NatsCluster, NatsServer
from devstack.net import free_port, wait_until
from devstack.postgres import Postgres
from devstack.process import ServiceProcess
from devstack.s3 import S3Server

REPO = Path(__file__).resolve().parents[1]
BUCKET = "avatars"
SERVING_TIMEOUT = 60.0
SERVICE_ARGV = {
    "accounts": [sys.executable, "-m", "accounts_service"],
    "imaging": [sys.executable, "-m", "imaging_service"],
}


def serving(addr: str) -> bool:
    """True once the gRPC health service at `addr` says SERVING (overall name)."""
    with grpc.insecure_channel(addr) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@dataclass
class Stack:
    root: Path
    nats: NatsServer | NatsCluster
    s3: S3Server
    pg: Postgres
    env: dict[str, str]  # the environment every service gets (plus its own overrides)
    name: str = "stack"  # the prefix of `note` lines
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)  # service name -> accounts, imaging, ...
    _ports: dict[str, int] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    _stops: list[Callable[[], object]] = field(default_factory=list)

    @property
    def accounts(self) -> ServiceProcess:
        return self.services["accounts"]

    @property
    def imaging(self) -> ServiceProcess:
        return self.services["imaging"]

    @property
    def accounts_addr(self) -> str:
        return self.env["ACCOUNTS_ADDR"]

    @property
    def cluster(self) -> NatsCluster:
        if not isinstance(self.nats, NatsCluster):
            raise TypeError("this stack runs a single nats-server (nats_nodes=1)")
        return self.nats

    def replicas(self, kind: str) -> list[str]:
        """The names of the services started as `kind` ("accounts", "imaging"), in order."""
        return [name for name, k in self.kinds.items() if k == kind]

    def note(self, what: str) -> None:
        self.events.append(what)
        print(f"[{self.name}] {time.strftime('%H:%M:%S')} {what}", flush=True)

    def start_service(
        self,
        name: str,
        argv: Sequence[str] | None = None,
        *,
        port_key: str | None = None,
        env: Mapping[str, str] | None = None,
        kind: str | None = None,
    ) -> ServiceProcess:
        """Starts `name` as a `kind` of service (default: `name`; argv defaults to that
        service's module) and waits until it serves on the port its environment names:
        `port_key` (default IMAGING_PORT for imaging, else ACCOUNTS_PORT)."""
        kind = kind or name
        # Each process its own metrics port, so that two services (or `make run`) never collide.
        metrics = {
            "ACCOUNTS_METRICS_PORT": str(free_port()),
            "IMAGING_METRICS_PORT": str(free_port()),
        }
        full_env = {**self.env, **metrics, **(env or {})}
        key = port_key or ("IMAGING_PORT" if kind == "imaging" else "ACCOUNTS_PORT")
        process = ServiceProcess(
            name, list(argv or SERVICE_ARGV[kind]), log_path=self.root / f"{name}.log",
            env=full_env, cwd=REPO,
        )  # fmt: skip
        self._stops.append(lambda: process.terminate(30))
        self.services[name] = process
        self.kinds[name] = kind
        self._ports[name] = int(full_env[key])
        self.service_env[name] = full_env
        self.start_again(name)
        return process

    def start_again(self, name: str) -> None:
        """(Re)starts a service started before, and waits until it serves."""
        process, port = self.services[name], self._ports[name]
        process.start()

        def up() -> bool:
            process.check_running()
            return serving(f"127.0.0.1:{port}")

        wait_until(up, SERVING_TIMEOUT, f"{name} serving")

    def close(self) -> None:
        for stop in reversed(self._stops):
            with contextlib.suppress(Exception):
                stop()
        self._stops.clear()


@contextlib.contextmanager
def stack(
    prefix: str,
    *,
    env: Mapping[str, str] | None = None,
    services: Sequence[str] = ("accounts", "imaging"),
    database: str = "bench",
    nats_nodes: int = 1,
    replicas: Mapping[str, int] | None = None,
) -> Iterator[Stack]:
    """The servers, a database `database`, and `services` started in order with `env` on top of
    the common environment; `replicas` of a service (default 1) are started one after the
    other. The root folder (logs) is `Stack.root`; the caller removes it."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    # Beside root, not in it: the cluster runs as the postgres user, who cannot enter root's
    # private temporary folder.
    pg_dir = Path(tempfile.gettempdir()) / f"{prefix}pg-{uuid.uuid4().hex[:8]}"
    nats: NatsServer | NatsCluster = (
        NatsCluster(root / "nats", nats_nodes)  # logs: nats/n0.log, ...
        if nats_nodes > 1
        else NatsServer(root / "nats", log_path=root / "nats.log")
    )
    counts = {name: (replicas or {}).get(name, 1) for name in services}
    s3 = S3Server(root / "s3", log_path=root / "s3.log")
    pg = Postgres(pg_dir, log_path=root / "pg.log")
    s = Stack(root, nats, s3, pg, {}, name=prefix.strip("-"))
    try:
        for server in (nats, s3, pg):
            server.start()
            s._stops.append(server.stop)
        s3.ensure_bucket(BUCKET)
        accounts_ports = [free_port() for _ in range(counts.get("accounts", 1))]
        accounts_port = accounts_ports[0]
        s.env = {
            "PATH": "/usr/bin:/bin", "DATABASE_URL": pg.create_database(database),
            "NATS_URL": nats.url, "S3_ENDPOINT": s3.endpoint, "S3_BUCKET": BUCKET,
            "S3_ACCESS_KEY": s3.access_key, "S3_SECRET_KEY": s3.secret_key,
            "INTERNAL_TOKEN": uuid.uuid4().hex, "ACCOUNTS_PORT": str(accounts_port),
            "ACCOUNTS_ADDR": f"127.0.0.1:{accounts_port}", "IMAGING_PORT": str(free_port()),
            "PYTHONUNBUFFERED": "1", **(env or {}),
        }  # fmt: skip
        if len(accounts_ports) > 1:
            s.env["ACCOUNTS_ADDR"] = "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in accounts_ports)
        for name in services:
            if counts[name] == 1:
                s.start_service(name)
                continue
            for i in range(counts[name]):
                port = accounts_ports[i] if name == "accounts" else free_port()
                port_key = "ACCOUNTS_PORT" if name == "accounts" else "IMAGING_PORT"
                s.start_service(f"{name}-{i}", kind=name, env={port_key: str(port)})
        yield s
    finally:
        s.close()
        shutil.rmtree(pg_dir, ignore_errors=True)
