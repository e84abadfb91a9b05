"""The NATS users and permissions of deploy/ against both services' real NATS code.

nats-server runs with the dev overlay's authorization.conf as it is (only the passwords file is
the test's): accounts' Bus publishes, imaging's queue ensures its streams and consumer, pulls,
acks, dead-letters and replays, and neither can do what the other one does.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client

from accounts_service.adapters.bus import INBOX_PREFIX, Bus
from credentials.nats_auth import NatsAuth
from credentials.nats_connect import connect_options
from devstack.nats import NatsServer
from devstack.net import eventually
from devstack.process import find_binary
from imaging_service.bus import JobQueue, QueueConfig, open_queue
from tests.e2e.certs import Authority
from tests.integration.imaging_queue import REPLAY_SUBJECT, SUBJECT, deployed_queue

DEPLOYED = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "overlays" / "dev" / "nats"
ACCOUNTS_PASSWORD = f"accounts-{uuid.uuid4().hex}"
IMAGING_PASSWORD = f"imaging-{uuid.uuid4().hex}"
VIOLATION = "permissions violation"


def _layout(root: Path) -> Path:
    """config/ holds the deployed files, secrets/ the passwords, as in the NATS pod."""
    (root / "config").mkdir(parents=True)
    (root / "secrets").mkdir()
    for name in ("nats.conf", "authorization.conf"):
        shutil.copy(DEPLOYED / name, root / "config" / name)
    (root / "secrets" / "passwords.conf").write_text(
        f'ACCOUNTS_NATS_PASSWORD: "{ACCOUNTS_PASSWORD}"\n'
        f'IMAGING_NATS_PASSWORD: "{IMAGING_PASSWORD}"\n'
    )
    # The deployed nats.conf names its own port and store; devstack's flags must not collide.
    (root / "config" / "test.conf").write_text("include ./authorization.conf\n")
    return root / "config"


@pytest.fixture(scope="module")
def authorized_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    root = tmp_path_factory.mktemp("nats-auth")
    config = _layout(root)
    server = NatsServer(
        root / "store", log_path=root / "nats.log", config_file=config / "test.conf"
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NatsServer, Authority]]:
    """The same users, over TLS that wants a client certificate signed by `Authority`."""
    root = tmp_path_factory.mktemp("nats-tls")
    config = _layout(root)
    authority = Authority(root)
    server = authority.issue("server", server=True)
    (config / "tls.conf").write_text(
        "include ./authorization.conf\n"
        f'tls {{ cert_file: "{server.cert}", key_file: "{server.key}", '
        f'ca_file: "{authority.pair.cert}", verify: true }}\n'
    )
    nats_server = NatsServer(
        root / "store", log_path=root / "nats.log", config_file=config / "tls.conf"
    )
    nats_server.start()
    yield nats_server, authority
    nats_server.stop()


def imaging_config(url: str, **tls: str) -> QueueConfig:
    return deployed_queue(url, NatsAuth(user="imaging", password=IMAGING_PASSWORD, **tls))


@pytest.fixture
async def queue(authorized_nats: NatsServer) -> AsyncIterator[JobQueue]:
    opened = await asyncio.wait_for(open_queue(imaging_config(authorized_nats.url)), 20)
    yield opened
    await opened.close()


class Raw:
    """A bare client logged in as one service's user, recording the server's async errors."""

    def __init__(self) -> None:
        self.nc = Client()
        self.errors: list[str] = []

    async def connect(self, url: str, user: str, password: str) -> Client:
        async def record(exc: Exception) -> None:
            self.errors.append(str(exc).lower())

        await self.nc.connect(
            url, user=user, password=password, inbox_prefix=f"_INBOX.{user}",
            error_cb=record, allow_reconnect=False, connect_timeout=2,
        )  # fmt: skip
        return self.nc

    async def violation(self, subject: str) -> None:
        """Errors arrive through nats-py's error callback."""
        await eventually(
            lambda: any(VIOLATION in e and subject.lower() in e for e in self.errors),
            5,
            f"a permissions violation on {subject}",
        )


def test_the_deployed_nats_conf_is_valid(tmp_path: Path) -> None:
    config = _layout(tmp_path)
    done = subprocess.run(
        [find_binary("nats-server"), "-c", str(config / "nats.conf"), "-t"],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout


async def test_the_services_do_their_work_without_a_violation(
    authorized_nats: NatsServer, queue: JobQueue, caplog: pytest.LogCaptureFixture
) -> None:
    auth = NatsAuth(user="accounts", password=ACCOUNTS_PASSWORD)
    bus = Bus(authorized_nats.url, auth=auth)
    try:
        for n in range(2):
            await bus.publish(SUBJECT, f"request {n}".encode(), msg_id=str(uuid.uuid4()))
    finally:
        await bus.close()
    first = await queue.fetch(5)
    assert first is not None and first.data == b"request 0"
    await first.ack()
    second = await queue.fetch(5)
    assert second is not None and second.data == b"request 1"
    await queue.dead_letter(second, event_id=str(uuid.uuid4()), reason="test")
    await second.term()
    assert await queue.dead_lettered() == 1
    assert await queue.replay(0) == 1
    replayed = await queue.fetch(5)
    assert replayed is not None and replayed.data == b"request 1"
    assert replayed.subject == REPLAY_SUBJECT
    await replayed.ack()
    assert (await queue.info()).pending == 0
    errors = [str(getattr(r, "error", "")).lower() for r in caplog.records]
    assert not [e for e in errors if VIOLATION in e]


async def test_accounts_cannot_consume_or_manage_streams(
    authorized_nats: NatsServer, queue: JobQueue
) -> None:
    raw = Raw()
    nc = await raw.connect(authorized_nats.url, "accounts", ACCOUNTS_PASSWORD)
    try:
        await nc.subscribe(SUBJECT)
        await raw.violation(f'subscription to "{SUBJECT}"')
        await nc.subscribe("_INBOX.imaging.>")  # where imaging's pulled messages arrive
        await raw.violation('subscription to "_INBOX.imaging.>"')
        js = nc.jetstream(timeout=1)
        sub = await js.pull_subscribe_bind("imaging", stream="ACCOUNTS")
        with pytest.raises(nats.errors.TimeoutError):
            await sub.fetch(1, timeout=1)
        await raw.violation('publish to "$js.api.consumer.msg.next.accounts.imaging"')
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await js.stream_info("ACCOUNTS")
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await js.delete_stream("ACCOUNTS")
    finally:
        await nc.close()
    assert (await queue.info()).pending == 0  # the stream and consumer are still there


async def test_imaging_cannot_publish_thumbnail_requests(
    authorized_nats: NatsServer, queue: JobQueue
) -> None:
    raw = Raw()
    nc = await raw.connect(authorized_nats.url, "imaging", IMAGING_PASSWORD)
    try:
        js = nc.jetstream(timeout=1)
        before = (await js.stream_info("ACCOUNTS")).state.messages
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await js.publish(SUBJECT, b"forged", headers={"Nats-Msg-Id": str(uuid.uuid4())})
        await raw.violation(f'publish to "{SUBJECT}"')
        await nc.subscribe("_INBOX.accounts.>")
        await raw.violation('subscription to "_INBOX.accounts.>"')
        assert (await js.stream_info("ACCOUNTS")).state.messages == before
    finally:
        await nc.close()
    assert await queue.fetch(0.5) is None


async def test_a_wrong_or_missing_password_is_refused(authorized_nats: NatsServer) -> None:
    for user, password in (("accounts", IMAGING_PASSWORD), ("", "")):
        options = {"user": user, "password": password} if user else {}
        with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
            await nats.connect(
                authorized_nats.url, allow_reconnect=False, connect_timeout=2, **options
            )


async def test_both_services_speak_tls_with_client_certificates(
    tls_nats: tuple[NatsServer, Authority],
) -> None:
    server, authority = tls_nats
    ca = str(authority.pair.cert)
    accounts_cert = authority.issue("accounts", server=False)
    imaging_cert = authority.issue("imaging", server=False)
    without_cert = NatsAuth(user="accounts", password=ACCOUNTS_PASSWORD, tls_ca_file=ca)
    options = connect_options(server.url, without_cert, INBOX_PREFIX)
    with pytest.raises((OSError, nats.errors.Error, TimeoutError)):
        await nats.connect(**options, allow_reconnect=False, connect_timeout=2)
    auth = NatsAuth(
        user="accounts", password=ACCOUNTS_PASSWORD, tls_ca_file=ca,
        tls_cert_file=str(accounts_cert.cert), tls_key_file=str(accounts_cert.key),
    )  # fmt: skip
    tls = {"tls_ca_file": ca, "tls_cert_file": str(imaging_cert.cert)}
    config = imaging_config(server.url, **tls, tls_key_file=str(imaging_cert.key))
    queue = await asyncio.wait_for(open_queue(config), 20)
    bus = Bus(server.url, auth=auth)
    try:
        await bus.publish(SUBJECT, b"over tls", msg_id=str(uuid.uuid4()))
        delivery = await queue.fetch(5)
        assert delivery is not None and delivery.data == b"over tls"
        await delivery.ack()
    finally:
        await bus.close()
        await queue.close()
