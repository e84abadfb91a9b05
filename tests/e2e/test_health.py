"""Health says NOT_SERVING while a dependency is unreachable, and SERVING once it is back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from devstack.nats import NatsServer
from devstack.net import free_port, wait_until
from devstack.s3 import S3Server
from tests.e2e.conftest import Service, health_status

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def spare_s3(tmp_path: Path) -> Iterator[S3Server]:
    server = S3Server(tmp_path / "s3", log_path=tmp_path / "s3.log")
    yield server
    server.stop()


def test_accounts_is_not_serving_until_storage_answers(
    service_env: dict[str, str], spare_s3: S3Server, tmp_path: Path
) -> None:
    port = free_port()
    env = {**service_env, "ACCOUNTS_PORT": str(port), "S3_ENDPOINT": spare_s3.endpoint}
    service = Service("accounts-2", "accounts_service", port, env, tmp_path / "accounts.log")
    service.process.start()
    try:
        wait_until(lambda: health_status(service.addr) is not None, 30, "health answering")
        assert health_status(service.addr) == NOT_SERVING
        assert health_status(service.addr, "accounts.v1.AccountsService") == NOT_SERVING
        spare_s3.start()
        spare_s3.ensure_bucket(service_env["S3_BUCKET"])
        service.wait_serving()
    finally:
        service.process.terminate(30)
    assert service.process.returncode == 0


def test_imaging_is_not_serving_until_nats_answers(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    nats = NatsServer(tmp_path / "nats", port=free_port(), log_path=tmp_path / "nats.log")
    env = {**service_env, "IMAGING_PORT": str(port), "NATS_URL": nats.url}
    service = Service("imaging-2", "imaging_service", port, env, tmp_path / "imaging.log")
    service.process.start()
    try:
        wait_until(lambda: health_status(service.addr) is not None, 30, "health answering")
        assert health_status(service.addr) == NOT_SERVING
        assert health_status(service.addr, "imaging.v1.ImagingService") == NOT_SERVING
        nats.start()
        service.wait_serving()
    finally:
        service.process.terminate(30)
        nats.stop()
    assert service.process.returncode == 0
