"""Secrets in both services' settings: a repr and log lines without secrets, NATS credential
errors as each service's SettingsError, S3's CA bundle.

The redaction, the scrubber and the NATS credentials themselves are credentials/'s, tested once
in test_credentials.py; here, each service's use of them.
"""

from __future__ import annotations

import json
import logging
from types import ModuleType
from urllib.parse import quote

import pytest

from accounts_service import settings as accounts_settings
from accounts_service.adapters import storage as accounts_storage
from credentials.nats_auth import CredentialError, nats_auth_from_env
from credentials.redact import REDACTED
from imaging_service import settings as imaging_settings
from imaging_service import storage as imaging_storage
from service_logs import json_lines

SETTINGS = [accounts_settings, imaging_settings]
LOGS = [json_lines]  # both services log through it
SECRET = "s3cr3t/p@ss"  # "/" and "@" survive only percent-encoded in a URL
ENCODED = quote(SECRET, safe="")
ENV = {
    "INTERNAL_TOKEN": "internal-token-value",
    "DATABASE_URL": f"postgresql://avatars:{ENCODED}@db.example:5432/avatars"
    "?sslmode=verify-full&sslrootcert=/etc/pg/ca.pem",
    "NATS_URL": "nats://relay:natsurlpass@nats.example:4222",
    "S3_ACCESS_KEY": "s3-access-key",
    "S3_SECRET_KEY": "s3-secret-key-value",
}


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
@pytest.mark.parametrize(
    "bad",
    [
        {"NATS_USER": "accounts"},
        {"NATS_USER": "u", "NATS_PASSWORD": "p", "NATS_TOKEN": "t"},
        {"NATS_TLS_CERT_FILE": __file__},
        {"NATS_CREDS_FILE": "/nonexistent/user.creds"},
        {"NATS_NKEY_SEED_FILE": __file__},  # holds no seed
    ],
)
def test_a_bad_nats_credential_is_a_settings_error_with_the_same_message(
    module: ModuleType, bad: dict[str, str]
) -> None:
    with pytest.raises(CredentialError) as shared:
        nats_auth_from_env(bad)
    with pytest.raises(module.SettingsError) as refused:
        module.from_env(ENV | bad)
    assert str(refused.value) == str(shared.value)


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
        f"raw {REDACTED} encoded {REDACTED} in nats://{REDACTED}@h:4222 "
        f"and postgresql://{REDACTED}@db/x, abc stays"
    )
