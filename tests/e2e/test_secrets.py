"""No secret in either service's log or in an error a client gets, through NATS and S3 outages.

Both services run as processes of this module, against a NATS that demands a password, an S3
with a secret key of its own and a DATABASE_URL with a password in it (the local PostgreSQL
trusts, so any password does), every secret distinctive enough to be found anywhere.
"""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from accounts.v1 import accounts_pb2_grpc
from google.protobuf import empty_pb2
from imaging.v1 import imaging_pb2, imaging_pb2_grpc

from credentials.redact import REDACTED  # what the log scrubber writes for a secret
from devstack.nats import NatsServer
from devstack.net import free_port, wait_until
from devstack.postgres import Postgres
from devstack.s3 import S3Server
from tests.e2e.conftest import Service
from tests.e2e.faults import jobs, worker_paused
from tests.e2e.support import PENDING, READY, create_user, image_bytes, wait_settled

AVATAR = "photo_coffee_progressive_q80.jpg"


@dataclass(frozen=True)
class Secrets:
    nats_password: str
    s3_secret_key: str
    internal_token: str
    database_password: str

    def values(self) -> list[str]:
        return [self.nats_password, self.s3_secret_key, self.internal_token, self.database_password]


@dataclass
class Stack:
    nats: NatsServer
    s3: S3Server
    accounts: Service
    imaging: Service
    database_url: str


@pytest.fixture(scope="module")
def secrets() -> Secrets:
    tag = uuid.uuid4().hex
    return Secrets(
        nats_password=f"natsPass{tag}",
        s3_secret_key=f"s3Secret{tag}",
        internal_token=f"internalToken{tag}",
        database_password=f"pgPass{tag}",
    )


def with_password(url: str, password: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or 'postgres'}:{password}@{host}").geturl()


@pytest.fixture(scope="module")
def stack(
    secrets: Secrets,
    pg: Postgres,
    service_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("secrets")
    nats = NatsServer(
        root / "nats", log_path=root / "nats.log", user="avatars", password=secrets.nats_password
    )
    s3 = S3Server(
        root / "s3", log_path=root / "s3.log", access_key="secretsTest",
        secret_key=secrets.s3_secret_key,
    )  # fmt: skip
    nats.start()
    s3.start()
    bucket = f"secrets-{uuid.uuid4().hex[:8]}"
    s3.ensure_bucket(bucket)
    database = f"secrets_{uuid.uuid4().hex[:8]}"
    database_url = with_password(pg.create_database(database), secrets.database_password)
    accounts_port, imaging_port = free_port(), free_port()
    env = service_env | {
        "S3_ENDPOINT": s3.endpoint,
        "S3_ACCESS_KEY": s3.access_key,
        "S3_SECRET_KEY": secrets.s3_secret_key,
        "S3_BUCKET": bucket,
        "INTERNAL_TOKEN": secrets.internal_token,
        "ACCOUNTS_PORT": str(accounts_port),
        "ACCOUNTS_ADDR": f"127.0.0.1:{accounts_port}",
        "IMAGING_PORT": str(imaging_port),
    }
    # Both ways of giving NATS credentials: in the URL (accounts) and as settings (imaging).
    accounts_env = env | {"DATABASE_URL": database_url, "NATS_URL": nats.url_with_credentials}
    imaging_env = env | {
        "NATS_URL": nats.url, "NATS_USER": "avatars", "NATS_PASSWORD": secrets.nats_password,
    }  # fmt: skip
    imaging_env.pop("DATABASE_URL", None)  # imaging gets no database credential
    accounts = Service(
        "accounts", "accounts_service", accounts_port, accounts_env, root / "accounts.log"
    )
    imaging = Service("imaging", "imaging_service", imaging_port, imaging_env, root / "imaging.log")
    started: list[Service] = []
    try:
        for service in (accounts, imaging):
            service.start()
            started.append(service)
        yield Stack(nats, s3, accounts, imaging, database_url)
    finally:
        for service in reversed(started):
            service.process.terminate(30)
        s3.stop()
        nats.stop()
        pg.drop_database(database)


def logged(service: Service, *needles: str) -> bool:
    text = service.process.log_text()
    return all(needle in text for needle in needles)


def test_no_secret_in_logs_or_errors_through_nats_and_s3_outages(
    stack: Stack, secrets: Secrets
) -> None:
    errors: list[str] = []
    with (
        grpc.insecure_channel(stack.accounts.addr) as accounts_channel,
        grpc.insecure_channel(stack.imaging.addr) as imaging_channel,
    ):
        accounts = accounts_pb2_grpc.AccountsServiceStub(accounts_channel)
        imaging = imaging_pb2_grpc.ImagingServiceStub(imaging_channel)
        first = create_user(accounts, image_bytes(AVATAR))
        assert wait_settled(accounts, first.id).thumbnail_status == READY
        renders = descendants(stack.imaging)
        assert renders, "no render process"
        for pid in renders:
            environment = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
            assert not [s for s in secrets.values() if s in environment], "a render sees a secret"

        # A job waits in the stream while S3 goes away, so the worker meets the outage too.
        with worker_paused(stack.imaging, stack.nats.url_with_credentials):
            queued = create_user(accounts, image_bytes(AVATAR))
            stack.s3.stop()
        try:
            wait_until(lambda: jobs(stack.imaging, queued.id), 60, "an attempt failing on S3")
            stack.nats.stop()
            try:
                wait_until(
                    lambda: (
                        logged(stack.imaging, "nats disconnected")
                        and logged(stack.accounts, "nats disconnected")
                    ),
                    30,
                    "both services noticing that NATS is gone",
                )
                errors += failed_calls(accounts, imaging, secrets.internal_token)
                restart_while_down(stack)
            finally:
                stack.nats.start()
        finally:
            stack.s3.start()
        for service in (stack.accounts, stack.imaging):
            service.wait_serving()

        assert wait_settled(accounts, queued.id, timeout=120).thumbnail_status == READY
        last = create_user(accounts, image_bytes(AVATAR))
        assert last.thumbnail_status == PENDING
        assert wait_settled(accounts, last.id).thumbnail_status == READY

    for service in (stack.accounts, stack.imaging):
        service.process.terminate(30)  # the shutdown lines count too
    logs = {s.name: s.process.log_text() for s in (stack.accounts, stack.imaging)}
    assert errors, "no call failed during the outage"
    for secret in secrets.values():
        for form in {secret, urllib.parse.quote(secret)}:
            for name, text in logs.items():
                assert form not in text, f"{name}'s log holds a secret"
            assert not [e for e in errors if form in e], "an error message holds a secret"
    for name, text in logs.items():
        assert '"listening"' in text and '"stopped"' in text, f"{name} logged no full run"
        # Nothing even reached the log filter: no message of ours or of a library held one.
        assert REDACTED not in text, f"{name}'s log filter had to redact something"
    # The start-up line shows where the services connect, without the credentials.
    shown = urllib.parse.urlsplit(stack.database_url)
    assert f"postgresql://{shown.hostname}:{shown.port}{shown.path}" in logs["accounts"]
    assert f"'nats://127.0.0.1:{stack.nats.port}'" in logs["imaging"]


def descendants(service: Service) -> list[int]:
    """The pids of the processes under the service's (its render processes)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [service.process.pid]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def restart_while_down(stack: Stack) -> None:
    """Both services start again while NATS and S3 are down: their start-up retries log too."""
    for service in (stack.accounts, stack.imaging):
        service.process.terminate(30)
        service.process.start()

    def since_restart(service: Service) -> str:
        return service.process.log_text().rsplit('"msg": "listening"', 1)[-1]

    wait_until(
        lambda: (
            '"waiting for dependency"' in since_restart(stack.accounts)
            and '"nats error (not connected)"' in since_restart(stack.imaging)
        ),
        30,
        "both services waiting for their dependencies",
    )


def failed_calls(
    accounts: accounts_pb2_grpc.AccountsServiceStub,
    imaging: imaging_pb2_grpc.ImagingServiceStub,
    token: str,
) -> list[str]:
    """The details of calls that fail while NATS and S3 are down (each must fail)."""
    auth = (("authorization", f"Bearer {token}"),)
    calls = [
        lambda: create_user(accounts, image_bytes(AVATAR)),
        lambda: imaging.GetQueueStats(empty_pb2.Empty(), timeout=10),
        lambda: imaging.ReplayDeadLetters(
            imaging_pb2.ReplayDeadLettersRequest(limit=1), metadata=auth, timeout=10
        ),
    ]
    details = []
    for call in calls:
        with pytest.raises(grpc.RpcError) as failed:
            call()
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, failed.value.details()
        details.append(str(failed.value.details()))
    return details
