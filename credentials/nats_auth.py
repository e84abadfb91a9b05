"""NATS credentials and TLS files: read from the settings' mapping, checked whole at start."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import nkeys

from credentials.redact import url_secrets

_NKEY_SEED = re.compile(r"\bSU[A-Z2-7]{56}\b")  # a user seed, alone or in a .creds file


class CredentialError(ValueError):
    """A credential setting is half set, ambiguous or names a bad file; the message names the
    setting and never quotes a secret. Each service's settings.py (and tls.py, for certificate
    files) raises it again as a SettingsError with the same message."""


@dataclass(frozen=True)
class NatsAuth:
    """How a service proves itself to NATS and checks NATS' certificate: at most one of
    user/password, token, NKey seed file or creds file (else credentials in NATS_URL, if any),
    plus TLS with a CA file and a client certificate. repr shows no password or token."""

    user: str = ""
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    nkey_seed_file: str = ""
    creds_file: str = ""
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""


def nats_auth_from_env(env: Mapping[str, str]) -> NatsAuth:
    """The NATS_USER, NATS_PASSWORD, NATS_TOKEN and NATS_*_FILE keys of `env`; raises
    CredentialError for a named file that is not there and as check_nats_auth does."""
    auth = NatsAuth(
        user=env.get("NATS_USER", "").strip(),
        password=env.get("NATS_PASSWORD", "").strip(),
        token=env.get("NATS_TOKEN", "").strip(),
        nkey_seed_file=_file(env, "NATS_NKEY_SEED_FILE"),
        creds_file=_file(env, "NATS_CREDS_FILE"),
        tls_ca_file=_file(env, "NATS_TLS_CA_FILE"),
        tls_cert_file=_file(env, "NATS_TLS_CERT_FILE"),
        tls_key_file=_file(env, "NATS_TLS_KEY_FILE"),
    )
    check_nats_auth(auth)
    return auth


def check_nats_auth(auth: NatsAuth) -> None:
    """Raises CredentialError for a half or ambiguous NATS credential or a seed that does not
    parse."""
    if bool(auth.user) != bool(auth.password):
        raise CredentialError("NATS_USER and NATS_PASSWORD must be set together")
    if bool(auth.tls_cert_file) != bool(auth.tls_key_file):
        raise CredentialError("NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE must be set together")
    chosen = [
        key
        for key, value in (
            ("NATS_USER", auth.user),
            ("NATS_TOKEN", auth.token),
            ("NATS_NKEY_SEED_FILE", auth.nkey_seed_file),
            ("NATS_CREDS_FILE", auth.creds_file),
        )
        if value
    ]
    if len(chosen) > 1:
        raise CredentialError(f"set only one NATS credential, got {' and '.join(chosen)}")
    if auth.nkey_seed_file:
        _check_seed("NATS_NKEY_SEED_FILE", auth.nkey_seed_file)
    if auth.creds_file:
        _check_seed("NATS_CREDS_FILE", auth.creds_file)


def nats_secrets(url: str, auth: NatsAuth) -> list[str]:
    """The secret values in a NATS URL list and `auth`, for the log scrubber."""
    return [s for s in (*url_secrets(url), auth.password, auth.token) if s]


def _file(env: Mapping[str, str], key: str) -> str:
    path = env.get(key, "").strip()
    if path and not os.path.isfile(path):
        raise CredentialError(f"{key} names no readable file: {path!r}")
    return path


def _check_seed(key: str, path: str) -> None:
    """A seed that does not parse fails at start, not at the first publish; the message never
    quotes the file's content."""
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            found = _NKEY_SEED.search(file.read())
        if found is None:
            raise ValueError("no seed")
        nkeys.from_seed(found[0].encode())
    except (OSError, ValueError, nkeys.NkeysError):
        raise CredentialError(f"{key} holds no valid NATS user NKey seed: {path!r}") from None
