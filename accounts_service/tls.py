"""Server TLS from certificate files; with a client CA, clients must present a certificate."""

from __future__ import annotations

import grpc

from accounts_service.settings import Settings, SettingsError
from credentials import grpc_tls
from credentials.nats_auth import CredentialError


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """None for plaintext (no TLS_CERT_FILE); raises SettingsError for an unreadable file."""
    try:
        return grpc_tls.server_credentials(
            settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
        )
    except CredentialError as exc:
        raise SettingsError(str(exc)) from exc
