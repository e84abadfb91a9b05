"""Accounts settings for TLS and public URLs, and the URLs Storage hands to clients."""

from __future__ import annotations

from pathlib import Path

import pytest

from accounts_service.adapters.storage import Storage
from accounts_service.settings import SettingsError, from_env

BASE = {"INTERNAL_TOKEN": "t", "S3_ACCESS_KEY": "a", "S3_SECRET_KEY": "s"}


def test_tls_files_come_in_pairs_and_must_exist(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("c")
    key.write_text("k")
    settings = from_env(BASE | {"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key)})
    assert (settings.tls_cert_file, settings.tls_client_ca_file) == (str(cert), "")
    with pytest.raises(SettingsError, match="TLS_CERT_FILE and TLS_KEY_FILE"):
        from_env(BASE | {"TLS_CERT_FILE": str(cert)})
    with pytest.raises(SettingsError, match="TLS_CLIENT_CA_FILE needs"):
        from_env(BASE | {"TLS_CLIENT_CA_FILE": str(cert)})
    with pytest.raises(SettingsError, match="TLS_KEY_FILE names no readable file"):
        from_env(BASE | {"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(tmp_path / "none")})


def test_public_base_url_must_be_http() -> None:
    with pytest.raises(SettingsError, match="PUBLIC_BASE_URL"):
        from_env(BASE | {"PUBLIC_BASE_URL": "cdn.example.com"})


def test_urls_are_presigned_by_default_and_plain_under_a_public_base_url() -> None:
    key = "thumbnails/0b8e3c1e-5f0e-4a43-9d9c-7e0f2d5e8a10/1/small.png"
    presigned = Storage(from_env(BASE | {"S3_PUBLIC_ENDPOINT": "files.example.com"})).url(key)
    assert presigned.startswith(f"http://files.example.com/avatars/{key}?")
    assert "X-Amz-Signature=" in presigned
    plain = Storage(from_env(BASE | {"PUBLIC_BASE_URL": "https://cdn.example.com/a/"})).url(key)
    assert plain == f"https://cdn.example.com/a/{key}"
