"""Imaging TLS settings: certificate files come in pairs and must exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from imaging_service.settings import SettingsError, from_env

BASE = {"INTERNAL_TOKEN": "t"}


def test_tls_settings(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    pem.write_text("x")
    settings = from_env(
        BASE
        | {
            "TLS_CERT_FILE": str(pem),
            "TLS_KEY_FILE": str(pem),
            "ACCOUNTS_TLS_CA_FILE": str(pem),
            "ACCOUNTS_TLS_CERT_FILE": str(pem),
            "ACCOUNTS_TLS_KEY_FILE": str(pem),
        }
    )
    assert settings.accounts_tls_ca_file == settings.tls_cert_file == str(pem)
    assert from_env(BASE).accounts_tls_ca_file == ""
    with pytest.raises(SettingsError, match="ACCOUNTS_TLS_CERT_FILE and ACCOUNTS_TLS_KEY_FILE"):
        from_env(BASE | {"ACCOUNTS_TLS_CERT_FILE": str(pem)})
    with pytest.raises(SettingsError, match="ACCOUNTS_TLS_CA_FILE names no readable file"):
        from_env(BASE | {"ACCOUNTS_TLS_CA_FILE": str(tmp_path / "missing.pem")})
