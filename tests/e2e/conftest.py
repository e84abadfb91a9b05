"""Both services as real processes against the session's NATS, S3 and PostgreSQL."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from accounts.v1 import accounts_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from imaging.v1 import imaging_pb2_grpc

from devstack.nats import NatsServer
from devstack.net import free_port, wait_until
from devstack.process import ServiceProcess
from devstack.s3 import S3Server

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0


class Service:
    """A service process with its gRPC address; restartable on the same port."""

    def __init__(
        self,
        name: str,
        module: str,
        port: int,
        env: dict[str, str],
        log: Path,
        metrics_port: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        self.name = name
        self.addr = f"{host}:{port}"
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else ""
        self.process = ServiceProcess(
            name, [sys.executable, "-m", module], log_path=log, env=env, cwd=REPO
        )

    def start(self) -> None:
        self.process.start()
        self.wait_serving()

    def wait_serving(self, timeout: float = START_TIMEOUT) -> None:
        def serving() -> bool:
            self.process.check_running()
            return health_status(self.addr) == health_pb2.HealthCheckResponse.SERVING

        try:
            wait_until(serving, timeout, f"{self.name} health SERVING")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.process.log_tail(40)}") from exc

    def restart(self) -> None:
        self.process.terminate(30)
        self.start()


def health_status(addr: str, service: str = "") -> int | None:
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
        except grpc.RpcError:
            return None
        return int(reply.status)


@pytest.fixture(scope="session")
def internal_token() -> str:
    return f"test-token-{uuid.uuid4().hex}"


@pytest.fixture(scope="session")
def service_env(
    nats_server: NatsServer,
    s3_server: S3Server,
    s3_bucket: str,
    database_url: str,
    internal_token: str,
) -> dict[str, str]:
    accounts_port = free_port()
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "DATABASE_URL": database_url,
        "NATS_URL": nats_server.url,
        "S3_ENDPOINT": s3_server.endpoint,
        "S3_ACCESS_KEY": s3_server.access_key,
        "S3_SECRET_KEY": s3_server.secret_key,
        "S3_BUCKET": s3_bucket,
        "S3_SECURE": "false",
        "INTERNAL_TOKEN": internal_token,
        "ACCOUNTS_PORT": str(accounts_port),
        "ACCOUNTS_ADDR": f"127.0.0.1:{accounts_port}",
        "IMAGING_PORT": str(free_port()),
        # Off here, so that the extra service processes some tests start from this environment
        # never compete for a port; the session's two services get free ports below.
        "ACCOUNTS_METRICS_PORT": "0",
        "IMAGING_METRICS_PORT": "0",
        "OUTBOX_POLL_SECONDS": "1",
        "RECONCILE_AFTER_SECONDS": "8",
        "RECONCILE_EVERY_SECONDS": "1",
        # Old avatar generations' objects go 2 s after the change; cleanup sweeps every second.
        "OLD_GENERATION_GRACE_SECONDS": "2",
        "CLEANUP_EVERY_SECONDS": "1",
        # Short enough that a killed worker's message comes back quickly in fault tests.
        "ACK_WAIT_SECONDS": "4",
        "RETRY_BASE_SECONDS": "0.5",
        "RETRY_MAX_SECONDS": "4",
        "RENDER_PROCESSES": "2",
        "SHUTDOWN_GRACE_SECONDS": "10",
        # The session's services outlive the default 5 min connection age: without this a
        # WatchUser stream or a timed call could meet a GOAWAY mid-test. Tests of the age set
        # their own.
        "MAX_CONNECTION_AGE_SECONDS": "86400",
        "LOG_LEVEL": "INFO",
    }


@pytest.fixture(scope="session")
def accounts(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    log = tmp_path_factory.mktemp("logs") / "accounts.log"
    metrics_port = free_port()
    env = service_env | {"ACCOUNTS_METRICS_PORT": str(metrics_port)}
    port = int(service_env["ACCOUNTS_PORT"])
    service = Service("accounts", "accounts_service", port, env, log, metrics_port)
    service.start()
    yield service
    service.process.terminate(30)


@pytest.fixture(scope="session")
def imaging(
    service_env: dict[str, str], accounts: Service, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    log = tmp_path_factory.mktemp("logs") / "imaging.log"
    metrics_port = free_port()
    env = service_env | {"IMAGING_METRICS_PORT": str(metrics_port)}
    port = int(service_env["IMAGING_PORT"])
    service = Service("imaging", "imaging_service", port, env, log, metrics_port)
    service.start()
    yield service
    service.process.terminate(30)


@pytest.fixture(scope="session")
def accounts_stub(accounts: Service) -> Iterator[accounts_pb2_grpc.AccountsServiceStub]:
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    with grpc.insecure_channel(accounts.addr, options=options) as channel:
        yield accounts_pb2_grpc.AccountsServiceStub(channel)


@pytest.fixture(scope="session")
def imaging_stub(imaging: Service) -> Iterator[imaging_pb2_grpc.ImagingServiceStub]:
    with grpc.insecure_channel(imaging.addr) as channel:
        yield imaging_pb2_grpc.ImagingServiceStub(channel)


@pytest.fixture(scope="session")
def pipeline(accounts: Service, imaging: Service) -> tuple[Service, Service]:
    """Both services up: events flow from CreateUser to READY."""
    return accounts, imaging
