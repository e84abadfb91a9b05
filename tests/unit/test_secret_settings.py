"""Secrets in both services' settings: redacted URLs, a repr and log lines without secrets,
NATS credentials and TLS turned into nats-py options, S3's CA bundle.

The two services keep look-alike copies of the redaction and the NATS options (settings, logs,
bus are per service); every test here runs on both, so the copies cannot drift apart.
"""

from __future__ import annotations

import json
import logging
import ssl
from pathlib import Path
from types import ModuleType
from urllib.parse import quote

import nacl.signing
import nkeys
import pytest

from accounts_service import bus as accounts_bus
from accounts_service import logs as accounts_logs
from accounts_service import settings as accounts_settings
from accounts_service import storage as accounts_storage
from imaging_service import bus as imaging_bus
from imaging_service import logs as imaging_logs
from imaging_service import settings as imaging_settings
from imaging_service import storage as imaging_storage
from tests.e2e.certs import Authority

SETTINGS = [accounts_settings, imaging_settings]
BUSES = [accounts_bus, imaging_bus]
LOGS = [accounts_logs, imaging_logs]
SECRET = "s3cr3t/p@ss"  # "/" and "@" survive only percent-encoded in a URL
ENCODED = quote(SECRET, safe="")
ENV = {
    "INTERNAL_TOKEN": "internal-token-value",
    "DATABASE_URL": f"postgresql://avatars:{ENCODED}@db.example:5432/avatars"
    "?sslmode=verify-full&sslrootcert=/etc/pg/ca.pem",
    "NATS_URL": "nats://relay:natsurlpass@nats.example:4222",
    "S3_SECRET_KEY": "s3-secret-key-value",
}


@pytest.mark.parametrize("module", SETTINGS)
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://u:pw@db.example:5432/avatars?sslmode=require&password=x",
            "postgresql://db.example:5432/avatars",
        ),
        (f"postgresql://u:{ENCODED}@h1:5432,h2:5433/db", "postgresql://h1:5432,h2:5433/db"),
        ("postgresql://u:pa/ss@db/x", "postgresql://db/x"),
        ("nats://user:pw@nats:4222", "nats://nats:4222"),
        ("nats://sometoken@nats:4222", "nats://nats:4222"),
        ("nats://a:p@n1:4222,tls://a:p@n2:4222", "nats://n1:4222,tls://n2:4222"),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("host=db port=5432 dbname=avatars user=u password=pw sslmode=require",
         "host=db port=5432 dbname=avatars"),
        ("", ""),
    ],
)  # fmt: skip
def test_redacted_urls_keep_scheme_host_port_and_database(
    module: ModuleType, url: str, shown: str
) -> None:
    assert module.redact_url(url) == shown


def test_accounts_repr_shows_where_it_connects_and_no_secret() -> None:
    settings = accounts_settings.from_env(
        ENV
        | {"NATS_USER": "accounts", "NATS_PASSWORD": "nats-password-value", "PGPASSWORD": "pgpw"}
    )
    shown = repr(settings)
    assert "database_url='postgresql://db.example:5432/avatars'" in shown
    assert "nats_url='nats://nats.example:4222'" in shown
    assert "user='accounts'" in shown
    for secret in settings.secrets():
        assert secret not in shown
    assert set(settings.secrets()) == {
        SECRET,
        "natsurlpass",
        "nats-password-value",
        "s3-secret-key-value",
        "internal-token-value",
        "pgpw",
    }


def test_imaging_repr_shows_where_it_connects_and_no_secret() -> None:
    settings = imaging_settings.from_env(ENV | {"NATS_TOKEN": "nats-token-value"})
    shown = repr(settings)
    assert "nats_url='nats://nats.example:4222'" in shown
    for secret in settings.secrets():
        assert secret not in shown
    assert set(settings.secrets()) == {
        "natsurlpass",
        "nats-token-value",
        "s3-secret-key-value",
        "internal-token-value",
    }


def test_a_token_in_the_nats_url_is_a_secret() -> None:
    env = ENV | {"NATS_URL": "nats://urltokenvalue@nats:4222"}
    for module in SETTINGS:
        assert "urltokenvalue" in module.from_env(env).secrets()


def test_database_tls_parameters_reach_libpq_unchanged() -> None:
    assert accounts_settings.from_env(ENV).database_url == ENV["DATABASE_URL"]


def test_a_malformed_database_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(accounts_settings.SettingsError) as refused:
        accounts_settings.from_env(ENV | {"DATABASE_URL": "postgresql://u:hidden%zz@db/x"})
    assert "DATABASE_URL" in str(refused.value)
    assert "hidden" not in str(refused.value)


@pytest.mark.parametrize("module", SETTINGS)
def test_nats_credentials_are_whole_and_one_at_a_time(module: ModuleType, tmp_path: Path) -> None:
    error = module.SettingsError
    with pytest.raises(error, match="NATS_USER and NATS_PASSWORD"):
        module.from_env(ENV | {"NATS_USER": "accounts"})
    with pytest.raises(error, match=r"only one NATS credential.*NATS_USER and NATS_TOKEN"):
        module.from_env(ENV | {"NATS_USER": "u", "NATS_PASSWORD": "p", "NATS_TOKEN": "t"})
    with pytest.raises(error, match="NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE"):
        module.from_env(ENV | {"NATS_TLS_CERT_FILE": __file__})
    with pytest.raises(error, match="NATS_CREDS_FILE names no readable file"):
        module.from_env(ENV | {"NATS_CREDS_FILE": str(tmp_path / "missing.creds")})
    seed = tmp_path / "user.nk"
    seed.write_text("SUAxxxx-not-a-seed\n")
    with pytest.raises(
        error, match="NATS_NKEY_SEED_FILE holds no valid NATS user NKey seed"
    ) as bad:
        module.from_env(ENV | {"NATS_NKEY_SEED_FILE": str(seed)})
    assert "SUAxxxx" not in str(bad.value)
    seed.write_text(user_seed() + "\n")
    assert module.from_env(ENV | {"NATS_NKEY_SEED_FILE": str(seed)}).nats_auth.nkey_seed_file
    creds = tmp_path / "user.creds"
    creds.write_text(
        f"-----BEGIN USER NKEY SEED-----\n{user_seed()}\n------END USER NKEY SEED------\n"
    )
    assert module.from_env(ENV | {"NATS_CREDS_FILE": str(creds)}).nats_auth.creds_file


def user_seed() -> str:
    raw = nacl.signing.SigningKey.generate().encode()
    return str(nkeys.encode_seed(raw, nkeys.PREFIX_BYTE_USER).decode())


@pytest.mark.parametrize(("bus", "settings"), list(zip(BUSES, SETTINGS, strict=True)))
def test_nats_options_leave_unset_credentials_to_the_url(
    bus: ModuleType, settings: ModuleType
) -> None:
    options = bus.connect_options("nats://a:p@n1:4222, nats://a:p@n2:4222", settings.NatsAuth())
    assert options["servers"] == ["nats://a:p@n1:4222", "nats://a:p@n2:4222"]
    assert [options[k] for k in ("user", "password", "token", "nkeys_seed")] == [None] * 4
    assert "tls" not in options
    assert options["inbox_prefix"] == bus.INBOX_PREFIX
    auth = settings.NatsAuth(user="imaging", password="pw")
    assert bus.connect_options("nats://n:4222", auth)["password"] == "pw"


@pytest.mark.parametrize(("bus", "settings"), list(zip(BUSES, SETTINGS, strict=True)))
def test_nats_tls_trusts_the_ca_file_and_presents_the_client_certificate(
    bus: ModuleType, settings: ModuleType, tmp_path: Path
) -> None:
    authority = Authority(tmp_path)
    client = authority.issue("client", server=False)
    auth = settings.NatsAuth(
        tls_ca_file=str(authority.pair.cert),
        tls_cert_file=str(client.cert),
        tls_key_file=str(client.key),
    )
    context = bus.connect_options("tls://nats:4222", auth)["tls"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test CA"),),)]


def test_s3_https_uses_the_ca_file() -> None:
    for pool in (
        accounts_storage._http_client(True, "/etc/s3/ca.pem"),
        imaging_storage.http_client(True, "/etc/s3/ca.pem"),
    ):
        assert pool.connection_pool_kw["ca_certs"] == "/etc/s3/ca.pem"
        assert pool.connection_pool_kw["cert_reqs"] == "CERT_REQUIRED"
    for module in SETTINGS:
        assert module.from_env(ENV | {"S3_CA_FILE": __file__}).s3_ca_file == __file__
        with pytest.raises(module.SettingsError, match="S3_CA_FILE"):
            module.from_env(ENV | {"S3_CA_FILE": "/nonexistent/ca.pem"})


@pytest.mark.parametrize("logs", LOGS)
def test_log_lines_never_carry_a_secret(logs: ModuleType) -> None:
    secret = 'pa"ss wörd/1'
    formatter = logs.JsonFormatter([secret, "abc"])  # "abc": too short to redact
    message = (
        f"raw {secret} encoded {quote(secret, safe='')} in nats://u:other@h:4222 "
        "and postgresql://user:elsewhere@db/x, abc stays"
    )
    record = logging.makeLogRecord({"msg": message, "levelname": "WARNING"})
    record.__dict__["error"] = f"ValueError({secret!r})"
    line = formatter.format(record)
    entry = json.loads(line)
    assert secret not in entry["msg"] and secret not in entry["error"]
    for hidden in (quote(secret, safe=""), "other", "elsewhere", "u:"):
        assert hidden not in line
    assert entry["msg"] == (
        "raw [redacted] encoded [redacted] in nats://[redacted]@h:4222 "
        "and postgresql://[redacted]@db/x, abc stays"
    )
