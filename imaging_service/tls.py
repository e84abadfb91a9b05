"""TLS from certificate files: the imaging server's own port, and mutual TLS to accounts."""

from __future__ import annotations

from pathlib import Path

import grpc

from imaging_service.settings import Settings, SettingsError


def _read(variable: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"{variable}: cannot read {path!r}: {exc.strerror}") from exc


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """None for plaintext (no TLS_CERT_FILE)."""
    if not settings.tls_cert_file:
        return None
    pair = (
        _read("TLS_KEY_FILE", settings.tls_key_file),
        _read("TLS_CERT_FILE", settings.tls_cert_file),
    )
    return grpc.ssl_server_credentials([pair])


def accounts_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """None for plaintext; else TLS trusting ACCOUNTS_TLS_CA_FILE (system roots if unset),
    presenting ACCOUNTS_TLS_CERT_FILE/KEY_FILE as client certificate when set."""
    ca, cert, key = (
        settings.accounts_tls_ca_file,
        settings.accounts_tls_cert_file,
        settings.accounts_tls_key_file,
    )
    if not (ca or cert):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read("ACCOUNTS_TLS_CA_FILE", ca) if ca else None,
        private_key=_read("ACCOUNTS_TLS_KEY_FILE", key) if key else None,
        certificate_chain=_read("ACCOUNTS_TLS_CERT_FILE", cert) if cert else None,
    )


def channel(addr: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    """Connects lazily, like every grpc channel."""
    if credentials is None:
        return grpc.aio.insecure_channel(addr)
    return grpc.aio.secure_channel(addr, credentials)
