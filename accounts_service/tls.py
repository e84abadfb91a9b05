"""Server TLS from certificate files; with a client CA, clients must present a certificate."""

from __future__ import annotations

from pathlib import Path

import grpc

from accounts_service.settings import Settings, SettingsError


def _read(variable: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"{variable}: cannot read {path!r}: {exc.strerror}") from exc


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """None for plaintext (no TLS_CERT_FILE); raises SettingsError for an unreadable file."""
    if not settings.tls_cert_file:
        return None
    pair = (
        _read("TLS_KEY_FILE", settings.tls_key_file),
        _read("TLS_CERT_FILE", settings.tls_cert_file),
    )
    client_ca = settings.tls_client_ca_file
    return grpc.ssl_server_credentials(
        [pair],
        root_certificates=_read("TLS_CLIENT_CA_FILE", client_ca) if client_ca else None,
        require_client_auth=bool(client_ca),
    )
