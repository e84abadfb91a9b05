"""gRPC TLS from certificate files (credentials.grpc_tls); the handshakes: tests/e2e/test_tls.py."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from credentials.grpc_tls import read_file, server_credentials
from credentials.nats_auth import CredentialError


def test_no_certificate_means_plaintext() -> None:
    assert server_credentials("", "", "") is None


def test_server_credentials_from_readable_files(tmp_path: Path) -> None:
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (tmp_path / name).write_bytes(b"-----BEGIN PLACEHOLDER-----\n")
    cert, key, ca = (str(tmp_path / n) for n in ("cert.pem", "key.pem", "ca.pem"))
    assert isinstance(server_credentials(cert, key), grpc.ServerCredentials)
    assert isinstance(server_credentials(cert, key, ca), grpc.ServerCredentials)


@pytest.mark.parametrize("missing", ["TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE"])
def test_an_unreadable_file_is_named_by_its_setting(tmp_path: Path, missing: str) -> None:
    paths = {}
    for variable in ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE"):
        paths[variable] = tmp_path / variable.lower()
        if variable != missing:
            paths[variable].write_bytes(b"pem")
    with pytest.raises(CredentialError, match=rf"^{missing}: cannot read '.*{missing.lower()}'"):
        server_credentials(*(str(paths[v]) for v in paths))
    with pytest.raises(CredentialError, match="No such file"):
        read_file(missing, str(paths[missing]))
