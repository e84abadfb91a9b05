"""Settings of the accounts service, read once from the environment at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


class SettingsError(Exception):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    nats_url: str
    s3_endpoint: str
    s3_public_endpoint: str
    s3_access_key: str = field(repr=False)
    s3_secret_key: str = field(repr=False)
    s3_bucket: str
    s3_secure: bool
    s3_public_secure: bool
    s3_region: str
    internal_token: str = field(repr=False)
    port: int
    max_avatar_bytes: int
    max_pixels: int
    max_message_bytes: int
    url_expiry_seconds: int
    relay_poll_seconds: float
    reconcile_after_seconds: float
    reconcile_every_seconds: float
    db_pool_size: int
    shutdown_grace_seconds: float
    log_level: str
    public_base_url: str = ""  # plain thumbnail URLs under it (a CDN); "" = presigned GETs
    old_generation_grace_seconds: float = 86400.0
    cleanup_every_seconds: float = 5.0
    tls_cert_file: str = ""  # server TLS when set, with tls_key_file
    tls_key_file: str = ""
    tls_client_ca_file: str = ""  # when set, clients must present a certificate it signed
    metrics_port: int = 9101  # Prometheus /metrics over HTTP; 0: no metrics endpoint
    otlp_endpoint: str = ""  # OpenTelemetry traces go there over OTLP/gRPC; "": tracing off


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{key} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{key} must be a number, got {raw!r}") from None


def _bool(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{key} must be true or false, got {raw!r}")


def _required(env: Mapping[str, str], key: str) -> str:
    value = env.get(key, "").strip()
    if not value:
        raise SettingsError(f"{key} is required but not set")
    return value


def _file(env: Mapping[str, str], key: str) -> str:
    path = env.get(key, "").strip()
    if path and not os.path.isfile(path):
        raise SettingsError(f"{key} names no readable file: {path!r}")
    return path


def _tls_files(env: Mapping[str, str]) -> tuple[str, str, str]:
    cert, key, client_ca = (
        _file(env, k) for k in ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE")
    )
    if bool(cert) != bool(key):
        raise SettingsError("TLS_CERT_FILE and TLS_KEY_FILE must be set together")
    if client_ca and not cert:
        raise SettingsError("TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE")
    return cert, key, client_ca


def _base_url(env: Mapping[str, str]) -> str:
    value = env.get("PUBLIC_BASE_URL", "").strip()
    if value and not value.startswith(("http://", "https://")):
        raise SettingsError(f"PUBLIC_BASE_URL must start with http:// or https://, got {value!r}")
    return value


def from_env(env: Mapping[str, str]) -> Settings:
    """Builds the settings; raises SettingsError naming the first bad key."""
    s3_endpoint = env.get("S3_ENDPOINT", "127.0.0.1:9000")
    s3_secure = _bool(env, "S3_SECURE", False)
    max_avatar_bytes = _int(env, "MAX_AVATAR_BYTES", 20 * 1024 * 1024)
    max_message_bytes = _int(env, "MAX_MESSAGE_BYTES", 32 * 1024 * 1024)
    if max_message_bytes <= max_avatar_bytes:
        raise SettingsError("MAX_MESSAGE_BYTES must be larger than MAX_AVATAR_BYTES")
    tls_cert, tls_key, tls_client_ca = _tls_files(env)
    return Settings(
        database_url=env.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/avatars"),
        nats_url=env.get("NATS_URL", "nats://127.0.0.1:4222"),
        s3_endpoint=s3_endpoint,
        s3_public_endpoint=env.get("S3_PUBLIC_ENDPOINT", "") or s3_endpoint,
        s3_access_key=env.get("S3_ACCESS_KEY", "minioadmin"),
        s3_secret_key=env.get("S3_SECRET_KEY", "minioadmin"),
        s3_bucket=env.get("S3_BUCKET", "avatars"),
        s3_secure=s3_secure,
        s3_public_secure=_bool(env, "S3_PUBLIC_SECURE", s3_secure),
        s3_region=env.get("S3_REGION", "us-east-1"),
        internal_token=_required(env, "INTERNAL_TOKEN"),
        port=_int(env, "ACCOUNTS_PORT", 50051),
        max_avatar_bytes=max_avatar_bytes,
        max_pixels=_int(env, "MAX_PIXELS", 50_000_000),
        max_message_bytes=max_message_bytes,
        url_expiry_seconds=_int(env, "URL_EXPIRY_SECONDS", 3600),
        relay_poll_seconds=_float(env, "OUTBOX_POLL_SECONDS", 2.0),
        reconcile_after_seconds=_float(env, "RECONCILE_AFTER_SECONDS", 300.0),
        reconcile_every_seconds=_float(env, "RECONCILE_EVERY_SECONDS", 30.0),
        db_pool_size=_int(env, "DB_POOL_SIZE", 10),
        shutdown_grace_seconds=_float(env, "SHUTDOWN_GRACE_SECONDS", 20.0),
        log_level=env.get("LOG_LEVEL", "INFO").upper(),
        public_base_url=_base_url(env),
        old_generation_grace_seconds=_float(env, "OLD_GENERATION_GRACE_SECONDS", 86400.0),
        cleanup_every_seconds=_float(env, "CLEANUP_EVERY_SECONDS", 5.0),
        tls_cert_file=tls_cert,
        tls_key_file=tls_key,
        tls_client_ca_file=tls_client_ca,
        metrics_port=_port(env, "ACCOUNTS_METRICS_PORT", 9101),
        otlp_endpoint=_otlp_endpoint(env),
    )


def _port(env: Mapping[str, str], key: str, default: int) -> int:
    port = _int(env, key, default)
    if not 0 <= port <= 65535:
        raise SettingsError(f"{key} must be 0..65535, got {port}")
    return port


def _otlp_endpoint(env: Mapping[str, str]) -> str:
    value = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if value and not value.startswith(("http://", "https://")):
        raise SettingsError(
            f"OTEL_EXPORTER_OTLP_ENDPOINT must start with http:// or https://, got {value!r}"
        )
    return value
