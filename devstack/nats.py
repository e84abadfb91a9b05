"""nats-server with JetStream on 127.0.0.1, started and restarted with its stored streams."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO
from urllib.parse import quote

from devstack.net import LOCALHOST, free_ports, http_ok, port_open
from devstack.process import (
    INFRA_ENV,
    ExitCallback,
    ServiceProcess,
    find_binary,
    sibling_log,
    start_and_wait,
)


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
    ) -> None:
        picked = free_ports(2)
        self.store_dir = store_dir
        self.port = port or picked[0]
        self.monitor_port = monitor_port or picked[1]
        self.user = user
        self.password = password
        argv = [find_binary("nats-server"), "-a", LOCALHOST, "-p", str(self.port), "-js",
                "-sd", str(store_dir), "-m", str(self.monitor_port)]  # fmt: skip
        if config_file is not None:
            argv += ["-c", str(config_file)]
        if user:
            argv += ["--user", user, "--pass", password]
        self.process = ServiceProcess(
            "nats", argv, log_path=log_path or sibling_log(store_dir),
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

    def start(self) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        ports = [self.port, self.monitor_port]
        start_and_wait(self.process, ports, self._healthy, f"nats-server at {self.url}")

    def _healthy(self) -> bool:
        # /healthz answers 200 only once JetStream is up and its stored streams are loaded.
        return port_open(LOCALHOST, self.port) and http_ok(f"{self.monitor_url}/healthz")

    def stop(self, timeout: float = 10.0) -> None:
        self.process.terminate(timeout)

    def kill(self) -> None:
        self.process.kill()

    def restart(self) -> None:
        self.stop()
        self.start()
