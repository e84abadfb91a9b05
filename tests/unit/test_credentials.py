"""credentials/: URL redaction, the log scrubber, NATS credentials and connect options."""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import nacl.signing
import nkeys
import pytest

from credentials.nats_auth import CredentialError, NatsAuth, nats_auth_from_env, nats_secrets
from credentials.nats_connect import connect_options
from credentials.redact import REDACTED, redact_url, redacted_repr
from credentials.scrub import Scrubber
from tests.e2e.certs import Authority

ENCODED = quote("s3cr3t/p@ss", safe="")  # "/" and "@" survive only percent-encoded in a URL


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
def test_redacted_urls_keep_scheme_host_port_and_database(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@dataclass(frozen=True)
class Example:
    url: str
    user: str
    password: str = field(repr=False)


def test_a_redacted_repr_shows_urls_without_credentials_and_hides_repr_false_fields() -> None:
    shown = redacted_repr(Example("nats://u:urlpass@nats:4222", "u", "fieldpass"), ("url",))
    assert shown == "Example(url='nats://nats:4222', user='u')"


def test_nats_secrets_are_url_passwords_url_tokens_and_the_auth_ones() -> None:
    url = "nats://u:urlpass@n1:4222,nats://urltoken@n2:4222,nats://n3:4222"
    assert nats_secrets(url, NatsAuth(password="pw", token="")) == ["urlpass", "urltoken", "pw"]
    assert nats_secrets("nats://n:4222", NatsAuth()) == []


def user_seed() -> str:
    raw = nacl.signing.SigningKey.generate().encode()
    return str(nkeys.encode_seed(raw, nkeys.PREFIX_BYTE_USER).decode())


def test_nats_credentials_are_whole_and_one_at_a_time(tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match="NATS_USER and NATS_PASSWORD"):
        nats_auth_from_env({"NATS_USER": "accounts"})
    with pytest.raises(
        CredentialError, match=r"only one NATS credential.*NATS_USER and NATS_TOKEN"
    ):
        nats_auth_from_env({"NATS_USER": "u", "NATS_PASSWORD": "p", "NATS_TOKEN": "t"})
    with pytest.raises(CredentialError, match="NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE"):
        nats_auth_from_env({"NATS_TLS_CERT_FILE": __file__})
    with pytest.raises(CredentialError, match="NATS_CREDS_FILE names no readable file"):
        nats_auth_from_env({"NATS_CREDS_FILE": str(tmp_path / "missing.creds")})
    auth = nats_auth_from_env({"NATS_USER": " u ", "NATS_PASSWORD": "p", "NATS_TLS_CA_FILE": ""})
    assert auth == NatsAuth(user="u", password="p")
    assert "'p'" not in repr(auth)


def test_a_seed_file_must_hold_a_user_seed_which_no_error_quotes(tmp_path: Path) -> None:
    seed = tmp_path / "user.nk"
    seed.write_text("SUAxxxx-not-a-seed\n")
    with pytest.raises(
        CredentialError, match="NATS_NKEY_SEED_FILE holds no valid NATS user NKey seed"
    ) as bad:
        nats_auth_from_env({"NATS_NKEY_SEED_FILE": str(seed)})
    assert "SUAxxxx" not in str(bad.value)
    assert isinstance(bad.value, ValueError)
    seed.write_text(user_seed() + "\n")
    assert nats_auth_from_env({"NATS_NKEY_SEED_FILE": str(seed)}).nkey_seed_file == str(seed)
    creds = tmp_path / "user.creds"
    creds.write_text(
        f"-----BEGIN USER NKEY SEED-----\n{user_seed()}\n------END USER NKEY SEED------\n"
    )
    assert nats_auth_from_env({"NATS_CREDS_FILE": str(creds)}).creds_file == str(creds)


def test_nats_options_leave_unset_credentials_to_the_url() -> None:
    options = connect_options("nats://a:p@n1:4222, nats://a:p@n2:4222", NatsAuth(), "_INBOX.x")
    assert options["servers"] == ["nats://a:p@n1:4222", "nats://a:p@n2:4222"]
    assert [options[k] for k in ("user", "password", "token", "nkeys_seed")] == [None] * 4
    assert "tls" not in options
    assert options["inbox_prefix"] == "_INBOX.x"
    auth = NatsAuth(user="imaging", password="pw")
    assert connect_options("nats://n:4222", auth, "_INBOX.x")["password"] == "pw"


def test_nats_tls_trusts_the_ca_file_and_presents_the_client_certificate(tmp_path: Path) -> None:
    authority = Authority(tmp_path)
    client = authority.issue("client", server=False)
    auth = NatsAuth(
        tls_ca_file=str(authority.pair.cert),
        tls_cert_file=str(client.cert),
        tls_key_file=str(client.key),
    )
    context = connect_options("tls://nats:4222", auth, "_INBOX.x")["tls"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test CA"),),)]


def test_the_scrubber_takes_out_every_form_of_a_secret_and_url_userinfo() -> None:
    secret = 'pa"ss wörd/1'
    scrubber = Scrubber([secret, secret[:6], "abc"])  # "abc": too short to redact
    line = (
        f"raw {secret} json {json.dumps(secret)} encoded {quote(secret, safe='')} "
        f"path-encoded {quote(secret)} in nats://u:other@h:4222, abc stays"
    )
    assert scrubber.scrub(line) == (
        f'raw {REDACTED} json "{REDACTED}" encoded {REDACTED} path-encoded {REDACTED} '
        f"in nats://{REDACTED}@h:4222, abc stays"
    )
