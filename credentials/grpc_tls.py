"""gRPC TLS credentials from certificate files: both services' server ports, and imaging's
channel to accounts. Shared because a TLS set-up kept twice drifts (a security check)."""

from __future__ import annotations

from pathlib import Path

import grpc

from credentials.nats_auth import CredentialError


def read_file(variable: str, path: str) -> bytes:
    """The file the setting ``variable`` names; CredentialError (naming both) when unreadable."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CredentialError(f"{variable}: cannot read {path!r}: {exc.strerror}") from exc


def server_credentials(
    cert_file: str, key_file: str, client_ca_file: str = ""
) -> grpc.ServerCredentials | None:
    """None for plaintext (no TLS_CERT_FILE). With ``client_ca_file``, clients must present a
    certificate it signed."""
    if not cert_file:
        return None
    pair = (read_file("TLS_KEY_FILE", key_file), read_file("TLS_CERT_FILE", cert_file))
    return grpc.ssl_server_credentials(
        [pair],
        root_certificates=read_file("TLS_CLIENT_CA_FILE", client_ca_file)
        if client_ca_file
        else None,
        require_client_auth=bool(client_ca_file),
    )
