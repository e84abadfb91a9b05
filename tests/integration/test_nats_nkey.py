"""NKey seed files and JWT .creds files, from both services' settings through their bus code.

The test makes every key itself: a user NKey that nats-server lists in its authorization block,
and for the .creds file an operator, a system account, an account and a user whose JWTs it signs
(nats-server in operator mode with a memory resolver). Accounts' Bus publishes a thumbnail
request and imaging's queue fetches it; a key the server does not know is refused, and neither
the error nor the services' logs show its seed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.signing
import nats
import nats.errors
import nkeys
import pytest

from accounts_service import settings as accounts_settings
from accounts_service.adapters import bus as accounts_bus
from accounts_service.adapters.bus import Bus
from accounts_service.errors import PublishFailed
from credentials.nats_connect import connect_options
from devstack.nats import NatsServer
from devstack.net import eventually
from imaging_service import bus as imaging_bus
from imaging_service import settings as imaging_settings
from imaging_service.bus import open_queue
from tests.integration.imaging_queue import SUBJECT, deployed_queue

DEADLINE = 15.0
# What both services' settings require besides NATS; the values are never used here.
ENV = {
    "INTERNAL_TOKEN": "internal-token-value",
    "DATABASE_URL": "postgresql://avatars@db.example:5432/avatars",
    "S3_ACCESS_KEY": "s3-access-key",
    "S3_SECRET_KEY": "s3-secret-key-value",
}
AUTH_ERROR = "authorization violation"


@dataclass(frozen=True)
class Key:
    seed: bytes  # "S...": the secret
    public: str  # "U..." for a user, "A..." an account, "O..." an operator

    def sign(self, data: bytes) -> bytes:
        return bytes(nkeys.from_seed(bytearray(self.seed)).sign(data))


def new_key(prefix: int) -> Key:
    seed = nkeys.encode_seed(nacl.signing.SigningKey.generate().encode(), prefix)
    return Key(seed, nkeys.from_seed(bytearray(seed)).public_key.decode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_jwt(issuer: Key, subject: str, name: str, nats_claims: dict[str, Any]) -> str:
    """A NATS v2 JWT (what `nsc` writes): ed25519-nkey signature by `issuer` over header.claims."""
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    claims = {
        "jti": uuid.uuid4().hex.upper(),
        "iat": int(time.time()),
        "iss": issuer.public,
        "name": name,
        "sub": subject,
        "nats": {**nats_claims, "version": 2},
    }
    body = _b64(json.dumps(claims).encode())
    return f"{header}.{body}.{_b64(issuer.sign(f'{header}.{body}'.encode()))}"


def account_jwt(operator: Key, account: Key, name: str, *, jetstream: bool) -> str:
    """Unlimited, with JetStream if `jetstream` (nats-server refuses it on the system account)."""
    limited = ("subs", "data", "payload", "imports", "exports", "conn", "leaf")
    if jetstream:
        limited += ("mem_storage", "disk_storage", "streams", "consumer")
    limits: dict[str, Any] = dict.fromkeys(limited, -1) | {"wildcards": True}
    return signed_jwt(operator, account.public, name, {"type": "account", "limits": limits})


def creds_file(path: Path, account: Key, user: Key) -> Path:
    claims = {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}
    jwt = signed_jwt(account, user.public, "test-user", claims)
    path.write_text(
        f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user.seed.decode()}\n------END USER NKEY SEED------\n"
    )
    return path


@dataclass(frozen=True)
class Secured:
    server: NatsServer
    good: Path  # a credential file the server accepts
    unknown: Path  # one it does not
    secret: str  # the seed in `unknown`, which must show nowhere


def _server(root: Path, config: str) -> NatsServer:
    (root / "test.conf").write_text(config)
    server = NatsServer(root / "store", log_path=root / "nats.log", config_file=root / "test.conf")
    server.start()
    return server


@pytest.fixture(scope="module")
def nkey_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    root = tmp_path_factory.mktemp("nats-nkey")
    user, stranger = new_key(nkeys.PREFIX_BYTE_USER), new_key(nkeys.PREFIX_BYTE_USER)
    (root / "user.nk").write_bytes(user.seed + b"\n")
    (root / "stranger.nk").write_bytes(stranger.seed + b"\n")
    server = _server(root, f'authorization {{ users = [ {{ nkey: "{user.public}" }} ] }}\n')
    yield Secured(server, root / "user.nk", root / "stranger.nk", stranger.seed.decode())
    server.stop()


@pytest.fixture(scope="module")
def creds_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    root = tmp_path_factory.mktemp("nats-creds")
    operator = new_key(nkeys.PREFIX_BYTE_OPERATOR)
    system, account = new_key(nkeys.PREFIX_BYTE_ACCOUNT), new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    stranger_account = new_key(nkeys.PREFIX_BYTE_ACCOUNT)  # signed by no operator the server trusts
    user, stranger = new_key(nkeys.PREFIX_BYTE_USER), new_key(nkeys.PREFIX_BYTE_USER)
    operator_jwt = signed_jwt(operator, operator.public, "test-operator", {"type": "operator"})
    server = _server(
        root,
        f"operator: {operator_jwt}\n"
        f"system_account: {system.public}\n"
        "resolver: MEMORY\n"
        f"resolver_preload: {{\n"
        f"  {system.public}: {account_jwt(operator, system, 'SYS', jetstream=False)}\n"
        f"  {account.public}: {account_jwt(operator, account, 'AVATARS', jetstream=True)}\n"
        "}\n",
    )
    good = creds_file(root / "user.creds", account, user)
    unknown = creds_file(root / "stranger.creds", stranger_account, stranger)
    yield Secured(server, good, unknown, stranger.seed.decode())
    server.stop()


def env(url: str, **credential: str) -> dict[str, str]:
    return ENV | {"NATS_URL": url} | credential


async def both_services_work(url: str, credential: dict[str, str]) -> None:
    """Accounts' Bus publishes a thumbnail request, imaging's queue fetches it, both with the
    NATS credential their settings make of `credential`."""
    accounts_auth = accounts_settings.from_env(env(url, **credential)).nats_auth
    imaging_auth = imaging_settings.from_env(env(url, **credential)).nats_auth
    queue = await asyncio.wait_for(open_queue(deployed_queue(url, imaging_auth)), 20)
    bus = Bus(url, auth=accounts_auth)
    try:
        request = uuid.uuid4().bytes
        await bus.publish(SUBJECT, request, msg_id=str(uuid.uuid4()))
        delivery = await queue.fetch(5)
        assert delivery is not None and delivery.data == request
        await delivery.ack()
    finally:
        await bus.close()
        await queue.close()


def shown(record: logging.LogRecord) -> str:
    """Everything a log line may carry: message, arguments, extras, exception."""
    return " ".join(str(value) for value in vars(record).values())


async def logged(caplog: pytest.LogCaptureFixture, logger: str, text: str) -> None:
    """The error arrives through nats-py's error callback, on the event loop."""
    await eventually(
        lambda: any(r.name == logger and text in shown(r).lower() for r in caplog.records),
        DEADLINE,
        f"{logger} logging {text!r}",
    )


async def refused_without_showing_the_seed(
    secured: Secured, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Both services' NATS options are refused by the server; the services keep retrying
    (NATS may be down for a while) and log why, and no error or log line carries the seed."""
    url, credential = secured.server.url, {key: str(secured.unknown)}
    services = (
        (accounts_settings.from_env, accounts_bus.INBOX_PREFIX),
        (imaging_settings.from_env, imaging_bus.INBOX_PREFIX),
    )
    for from_env, inbox_prefix in services:
        auth = from_env(env(url, **credential)).nats_auth
        options = connect_options(url, auth, inbox_prefix)
        with pytest.raises(nats.errors.Error) as refused:
            await nats.connect(**options, allow_reconnect=False)
        assert AUTH_ERROR in str(refused.value).lower()
        assert secured.secret not in f"{refused.value} {refused.value!r}"

    caplog.set_level(logging.WARNING)
    accounts_auth = accounts_settings.from_env(env(url, **credential)).nats_auth
    relay = Bus(url, auth=accounts_auth)
    publishing = asyncio.create_task(relay.publish(SUBJECT, b"x", msg_id=str(uuid.uuid4())))
    imaging_auth = imaging_settings.from_env(env(url, **credential)).nats_auth
    opening = asyncio.create_task(open_queue(deployed_queue(url, imaging_auth)))
    try:
        await logged(caplog, accounts_bus.__name__, AUTH_ERROR)
        await logged(caplog, imaging_bus.__name__, AUTH_ERROR)
        assert not publishing.done() and not opening.done()
    finally:
        for task in (publishing, opening):
            task.cancel()
        results = await asyncio.gather(publishing, opening, return_exceptions=True)
        await relay.close()
    assert all(isinstance(r, asyncio.CancelledError | PublishFailed) for r in results), results
    assert not [r for r in caplog.records if secured.secret in shown(r)]


async def test_both_services_log_in_with_an_nkey_seed_file(nkey_nats: Secured) -> None:
    url = nkey_nats.server.url
    await both_services_work(url, {"NATS_NKEY_SEED_FILE": str(nkey_nats.good)})


async def test_an_unknown_nkey_is_refused_and_its_seed_shown_nowhere(
    nkey_nats: Secured, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
        await nats.connect(nkey_nats.server.url, allow_reconnect=False)  # no key at all
    await refused_without_showing_the_seed(nkey_nats, "NATS_NKEY_SEED_FILE", caplog)


async def test_both_services_log_in_with_a_creds_file(creds_nats: Secured) -> None:
    await both_services_work(creds_nats.server.url, {"NATS_CREDS_FILE": str(creds_nats.good)})


async def test_creds_from_an_untrusted_account_are_refused_and_shown_nowhere(
    creds_nats: Secured, caplog: pytest.LogCaptureFixture
) -> None:
    await refused_without_showing_the_seed(creds_nats, "NATS_CREDS_FILE", caplog)
