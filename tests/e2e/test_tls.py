"""TLS on both servers, mutual TLS on the imaging-to-accounts callback, and PUBLIC_BASE_URL.

A stack of its own (NATS, database, bucket, both services) with certificates made at test time.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from accounts.v1 import accounts_pb2, accounts_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.nats import NatsServer
from devstack.net import free_port, wait_until
from devstack.postgres import Postgres
from devstack.process import ServiceProcess
from devstack.s3 import S3Server
from tests.e2e.certs import Authority
from tests.e2e.conftest import REPO
from tests.e2e.support import READY, create_user, image_bytes, wait_settled

PUBLIC_BASE = "https://cdn.example.test/avatars"
SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass(frozen=True)
class TlsStack:
    accounts_addr: str
    imaging_addr: str
    ca: Path
    client_cert: Path
    client_key: Path

    def client_credentials(self, with_certificate: bool = True) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.client_key.read_bytes() if with_certificate else None,
            certificate_chain=self.client_cert.read_bytes() if with_certificate else None,
        )


def serving(addr: str, credentials: grpc.ChannelCredentials) -> bool:
    with grpc.secure_channel(addr, credentials) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return reply.status == SERVING


def start(process: ServiceProcess, addr: str, credentials: grpc.ChannelCredentials) -> None:
    process.start()

    def up() -> bool:
        process.check_running()
        return serving(addr, credentials)

    try:
        wait_until(up, 60, f"{process.name} SERVING over TLS")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\n{process.log_tail(40)}") from exc


@pytest.fixture(scope="module")
def tls_stack(
    tmp_path_factory: pytest.TempPathFactory,
    service_env: dict[str, str],
    own_nats: NatsServer,
    pg: Postgres,
    s3_server: S3Server,
) -> Iterator[TlsStack]:
    folder = tmp_path_factory.mktemp("tls")
    ca = Authority(folder)
    accounts_tls, imaging_tls = ca.issue("accounts", server=True), ca.issue("imaging", server=True)
    imaging_client, test_client = (
        ca.issue("imaging-client", server=False),
        ca.issue("test-client", server=False),
    )
    database = f"avatars_tls_{uuid.uuid4().hex[:8]}"
    bucket = f"avatars-tls-{uuid.uuid4().hex[:8]}"
    s3_server.ensure_bucket(bucket)
    accounts_port, imaging_port = free_port(), free_port()
    env = service_env | {
        "DATABASE_URL": pg.create_database(database),
        "NATS_URL": own_nats.url,
        "S3_BUCKET": bucket,
        "ACCOUNTS_PORT": str(accounts_port),
        "ACCOUNTS_ADDR": f"127.0.0.1:{accounts_port}",
        "IMAGING_PORT": str(imaging_port),
    }
    accounts_env = env | {
        "TLS_CERT_FILE": str(accounts_tls.cert),
        "TLS_KEY_FILE": str(accounts_tls.key),
        "TLS_CLIENT_CA_FILE": str(ca.pair.cert),
        "PUBLIC_BASE_URL": PUBLIC_BASE,
    }
    imaging_env = env | {
        "TLS_CERT_FILE": str(imaging_tls.cert),
        "TLS_KEY_FILE": str(imaging_tls.key),
        "ACCOUNTS_TLS_CA_FILE": str(ca.pair.cert),
        "ACCOUNTS_TLS_CERT_FILE": str(imaging_client.cert),
        "ACCOUNTS_TLS_KEY_FILE": str(imaging_client.key),
    }
    stack = TlsStack(
        f"127.0.0.1:{accounts_port}",
        f"127.0.0.1:{imaging_port}",
        ca.pair.cert,
        test_client.cert,
        test_client.key,
    )
    processes = [
        ServiceProcess(name, [sys.executable, "-m", module], log_path=folder / f"{name}.log",
                       env=process_env, cwd=REPO)
        for name, module, process_env in [("accounts-tls", "accounts_service", accounts_env),
                                          ("imaging-tls", "imaging_service", imaging_env)]
    ]  # fmt: skip
    try:
        start(processes[0], stack.accounts_addr, stack.client_credentials())
        start(processes[1], stack.imaging_addr, stack.client_credentials(with_certificate=False))
        yield stack
    finally:
        for process in reversed(processes):
            process.terminate(30)
        pg.drop_database(database)


@contextlib.contextmanager
def secure_stub(
    stack: TlsStack, credentials: grpc.ChannelCredentials
) -> Iterator[accounts_pb2_grpc.AccountsServiceStub]:
    with grpc.secure_channel(stack.accounts_addr, credentials) as channel:
        yield accounts_pb2_grpc.AccountsServiceStub(channel)


@pytest.fixture
def mtls_stub(tls_stack: TlsStack) -> Iterator[accounts_pb2_grpc.AccountsServiceStub]:
    with secure_stub(tls_stack, tls_stack.client_credentials()) as stub:
        yield stub


def test_the_pipeline_runs_over_mutual_tls_with_urls_under_the_public_base(
    tls_stack: TlsStack, mtls_stub
) -> None:
    created = create_user(mtls_stub, image_bytes("photo_chelsea.png"))
    assert created.thumbnails.small.url == f"{PUBLIC_BASE}/avatars/{created.id}/1/original"
    # READY means the worker's UpdateThumbnails reached accounts with its client certificate.
    user = wait_settled(mtls_stub, created.id)
    assert user.thumbnail_status == READY, user.failure_reason
    for name in ("small", "medium", "large"):
        thumb = getattr(user.thumbnails, name)
        assert thumb.url == f"{PUBLIC_BASE}/thumbnails/{created.id}/1/{name}.png"


def test_accounts_refuses_plaintext_and_clients_without_a_certificate(
    tls_stack: TlsStack,
) -> None:
    request = accounts_pb2.GetUserRequest(id=str(uuid.uuid4()))
    with grpc.insecure_channel(tls_stack.accounts_addr) as channel:
        with pytest.raises(grpc.RpcError) as err:
            accounts_pb2_grpc.AccountsServiceStub(channel).GetUser(request, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    with secure_stub(tls_stack, tls_stack.client_credentials(with_certificate=False)) as stub:
        with pytest.raises(grpc.RpcError) as err:
            stub.GetUser(request, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_update_thumbnails_still_needs_the_bearer_credential_over_mutual_tls(
    tls_stack: TlsStack, mtls_stub
) -> None:
    user = create_user(mtls_stub, image_bytes("geom_64x64.png"))
    request = accounts_pb2.UpdateThumbnailsRequest(
        user_id=user.id, avatar_generation=1, failure=accounts_pb2.Failure(code="GAVE_UP")
    )
    with pytest.raises(grpc.RpcError) as err:
        mtls_stub.UpdateThumbnails(request, timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_imaging_serves_tls_only(tls_stack: TlsStack) -> None:
    assert serving(tls_stack.imaging_addr, tls_stack.client_credentials(with_certificate=False))
    with grpc.insecure_channel(tls_stack.imaging_addr) as channel:
        with pytest.raises(grpc.RpcError) as err:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_the_cli_speaks_mutual_tls(tls_stack: TlsStack, mtls_stub) -> None:
    user = create_user(mtls_stub, image_bytes("geom_64x64.png"))
    tls_args = ["--ca", str(tls_stack.ca), "--cert", str(tls_stack.client_cert),
                "--key", str(tls_stack.client_key)]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "accounts_service.cli", "--addr", tls_stack.accounts_addr,
         *tls_args, "watch", user.id, "--timeout", "60"],
        cwd=REPO, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "READY" in result.stdout
