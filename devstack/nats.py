"""nats-server with JetStream on 127.0.0.1, started and restarted with its stored streams."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from devstack.net import LOCALHOST, free_ports, http_json, http_ok, port_open, wait_until
from devstack.process import (
    INFRA_ENV,
    START_TIMEOUT,
    ExitCallback,
    ServiceProcess,
    find_binary,
    sibling_log,
    start_and_wait,
)


@dataclass(frozen=True)
class ClusterMember:
    """Where a server sits in a cluster: its name (JetStream needs one per server), the
    cluster's name, the port it takes routes on, and the route URLs of every member."""

    server_name: str
    cluster_name: str
    route_port: int
    routes: tuple[str, ...]

    def argv(self) -> list[str]:
        return ["--name", self.server_name, "--cluster_name", self.cluster_name,
                "--cluster", f"nats://{LOCALHOST}:{self.route_port}",
                "--routes", ",".join(self.routes)]  # fmt: skip


class NatsServer:
    """nats-server with JetStream on 127.0.0.1; `restart()` keeps the port and stored streams.

    With `user` and `password` every client must log in with them; with `config_file` the
    server also reads that file (users and permissions, say), the port and store flags winning.
    """

    def __init__(
        self,
        store_dir: Path,
        port: int | None = None,
        monitor_port: int | None = None,
        *,
        log_path: Path | None = None,
        echo: TextIO | None = None,
        on_exit: ExitCallback | None = None,
        user: str = "",
        password: str = "",
        config_file: Path | None = None,
        cluster: ClusterMember | None = None,
    ) -> None:
        picked = free_ports(2)
        self.store_dir = store_dir
        self.port = port or picked[0]
        self.monitor_port = monitor_port or picked[1]
        self.user = user
        self.password = password
        self.cluster = cluster
        self.name = cluster.server_name if cluster else "nats"
        argv = [find_binary("nats-server"), "-a", LOCALHOST, "-p", str(self.port), "-js",
                "-sd", str(store_dir), "-m", str(self.monitor_port)]  # fmt: skip
        if config_file is not None:
            argv += ["-c", str(config_file)]
        if cluster is not None:
            argv += cluster.argv()
        if user:
            argv += ["--user", user, "--pass", password]
        self.process = ServiceProcess(
            self.name, argv, log_path=log_path or sibling_log(store_dir),
            env=INFRA_ENV, echo=echo, on_exit=on_exit,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"nats://{LOCALHOST}:{self.port}"

    @property
    def url_with_credentials(self) -> str:
        """`url` with the user and password in it, the way NATS_URL may carry them."""
        if not self.user:
            return self.url
        userinfo = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return f"nats://{userinfo}@{LOCALHOST}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{LOCALHOST}:{self.monitor_port}"

    @property
    def ports(self) -> list[int]:
        return [self.port, self.monitor_port] + ([self.cluster.route_port] if self.cluster else [])

    def start(self) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        start_and_wait(self.process, self.ports, self.healthy, f"nats-server at {self.url}")

    def healthy(self) -> bool:
        # /healthz answers 200 only once JetStream is up and its stored streams are loaded.
        return port_open(LOCALHOST, self.port) and http_ok(f"{self.monitor_url}/healthz")

    def stop(self, timeout: float = 10.0) -> None:
        self.process.terminate(timeout)

    def kill(self) -> None:
        self.process.kill()

    def restart(self) -> None:
        self.stop()
        self.start()


class NatsCluster:
    """`size` nats-servers with JetStream, routed to each other on 127.0.0.1, each with its own
    store under `root`. Clients get every member in `url` (comma-separated) and learn the
    cluster's servers from each other; a member stopped and started again keeps its ports and
    catches up from the others."""

    def __init__(
        self,
        root: Path,
        size: int = 3,
        *,
        name: str = "avatars",
        echo: TextIO | None = None,
        on_exit: ExitCallback | None = None,
        config_file: Path | None = None,
    ) -> None:
        ports = free_ports(3 * size)
        routes = tuple(f"nats://{LOCALHOST}:{port}" for port in ports[2 * size :])
        self.nodes = [
            NatsServer(
                root / f"n{i}",
                ports[i],
                ports[size + i],
                echo=echo,
                on_exit=on_exit,
                config_file=config_file,
                cluster=ClusterMember(f"n{i}", name, ports[2 * size + i], routes),
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def node(self, server_name: str) -> NatsServer:
        return next(node for node in self.nodes if node.name == server_name)

    def start(self) -> None:
        """Starts every member, then waits until each is healthy: JetStream on one member is
        ready only once a majority has elected a meta leader, so none can be waited for alone."""
        taken = [port for node in self.nodes for port in node.ports if port_open(LOCALHOST, port)]
        if taken:
            raise RuntimeError(f"cannot start the NATS cluster: port(s) {taken} already in use")
        for node in self.nodes:
            node.store_dir.mkdir(parents=True, exist_ok=True)
            node.process.start()

        def all_healthy() -> bool:
            for node in self.nodes:
                node.process.check_running()
            return all(node.healthy() for node in self.nodes)

        try:
            wait_until(all_healthy, START_TIMEOUT, f"NATS cluster at {self.url}")
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        for node in self.nodes:
            node.stop(timeout)

    def stream_leader(self, stream: str, account: str = "$G") -> str | None:
        """The server name that leads `stream` now, as the members' monitoring pages say; None
        while no running member names one (an election under way)."""
        for node in self.nodes:
            if not node.process.running:
                continue
            for details in _account_streams(node, account):
                if details.get("name") == stream:
                    leader = (details.get("cluster") or {}).get("leader")
                    if leader:
                        return str(leader)
        return None


def _account_streams(node: NatsServer, account: str) -> list[dict[str, Any]]:
    page = http_json(f"{node.monitor_url}/jsz?acc={account}&streams=true")
    if not isinstance(page, dict):
        return []
    for details in page.get("account_details") or []:
        if details.get("name") == account or details.get("id") == account:
            return list(details.get("stream_detail") or [])
    return []
