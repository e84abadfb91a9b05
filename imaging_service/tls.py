"""TLS from certificate files: the imaging server's own port, and mutual TLS to accounts."""

from __future__ import annotations

import grpc

from credentials import grpc_tls
from credentials.nats_auth import CredentialError
from grpc_guard.options import CLIENT_OPTIONS
from imaging_service.settings import Settings, SettingsError


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """None for plaintext (no TLS_CERT_FILE); raises SettingsError for an unreadable file."""
    try:
        return grpc_tls.server_credentials(settings.tls_cert_file, settings.tls_key_file)
    except CredentialError as exc:
        raise SettingsError(str(exc)) from exc


def accounts_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """None for plaintext; else TLS trusting ACCOUNTS_TLS_CA_FILE (system roots if unset),
    presenting ACCOUNTS_TLS_CERT_FILE/KEY_FILE as client certificate when set. Raises
    SettingsError for an unreadable file."""
    ca, cert, key = (
        settings.accounts_tls_ca_file,
        settings.accounts_tls_cert_file,
        settings.accounts_tls_key_file,
    )
    if not (ca or cert):
        return None
    try:
        return grpc.ssl_channel_credentials(
            root_certificates=grpc_tls.read_file("ACCOUNTS_TLS_CA_FILE", ca) if ca else None,
            private_key=grpc_tls.read_file("ACCOUNTS_TLS_KEY_FILE", key) if key else None,
            certificate_chain=grpc_tls.read_file("ACCOUNTS_TLS_CERT_FILE", cert) if cert else None,
        )
    except CredentialError as exc:
        raise SettingsError(str(exc)) from exc


def channel(addr: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    """Connects lazily, like every grpc channel; round robin over the addresses of `addr`."""
    if credentials is None:
        return grpc.aio.insecure_channel(addr, options=CLIENT_OPTIONS)
    return grpc.aio.secure_channel(addr, credentials, options=CLIENT_OPTIONS)
