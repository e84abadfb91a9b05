"""nats.connect's keyword arguments made of a URL list and a NatsAuth."""

from __future__ import annotations

import ssl
from typing import Any

from credentials.nats_auth import NatsAuth


def connect_options(url: str, auth: NatsAuth, inbox_prefix: str) -> dict[str, Any]:
    """The servers in `url` (comma-separated), the credential and TLS of `auth`, and replies to
    inboxes under `inbox_prefix` (the only subjects a service's NATS user may subscribe to).
    Unset credentials stay None: an empty user or token would override those in the URL."""
    options: dict[str, Any] = {
        "servers": [server.strip() for server in url.split(",") if server.strip()],
        "user": auth.user or None,
        "password": auth.password or None,
        "token": auth.token or None,
        "nkeys_seed": auth.nkey_seed_file or None,
        "user_credentials": auth.creds_file or None,
        "inbox_prefix": inbox_prefix,
    }
    if auth.tls_ca_file or auth.tls_cert_file:
        options["tls"] = tls_context(auth)
    return options


def tls_context(auth: NatsAuth) -> ssl.SSLContext:
    """Verifies NATS' certificate against the CA file (else the system's CAs) and presents the
    client certificate if one is set; raises OSError or ssl.SSLError for an unreadable file."""
    context = ssl.create_default_context(cafile=auth.tls_ca_file or None)
    if auth.tls_cert_file:
        context.load_cert_chain(auth.tls_cert_file, auth.tls_key_file)
    return context
