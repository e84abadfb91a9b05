"""SeaweedFS `weed mini` serving S3 on 127.0.0.1, with every component's port kept across runs."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from minio import Minio

from devstack.net import LOCALHOST, bindable, free_port, port_open
from devstack.process import (
    INFRA_ENV,
    ExitCallback,
    ServiceProcess,
    find_binary,
    sibling_log,
    start_and_wait,
)

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
        if grpc in ports.values() or grpc > 65535 or not bindable(grpc):
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
    return saved if all(bindable(port) for port in saved.values()) else None


def _offset_pair_port(taken: set[int]) -> int:
    while True:
        port = _fresh_port(taken)
        grpc = port + _WEED_GRPC_OFFSET
        if grpc <= 65535 and grpc not in taken and bindable(grpc):
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
        env = {**INFRA_ENV, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
        self.process = ServiceProcess(
            "s3", self._argv(), log_path=log_path or sibling_log(data_dir),
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
        start_and_wait(self.process, list(self.ports.values()), self._serving, what)

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
