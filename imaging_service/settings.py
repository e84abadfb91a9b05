"""Settings of the imaging service, read once from the environment at start."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field


class SettingsError(Exception):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    """Durations are in seconds, sizes in bytes."""

    nats_url: str = field(repr=False)  # may carry user:password
    s3_endpoint: str
    s3_access_key: str = field(repr=False)
    s3_secret_key: str = field(repr=False)
    s3_bucket: str
    s3_secure: bool
    s3_region: str
    accounts_addr: str
    internal_token: str = field(repr=False)
    port: int
    render_processes: int
    render_max_tasks_per_child: int  # renders before a render process is replaced
    render_max_megapixels_in_flight: int  # decoded megapixels rendering at once (from headers)
    max_avatar_bytes: int
    max_pixels: int
    ack_wait_seconds: float
    max_deliver: int
    retry_base_seconds: float
    retry_max_seconds: float
    shutdown_grace_seconds: float
    log_level: str
    tls_cert_file: str = ""  # server TLS when set, with tls_key_file
    tls_key_file: str = ""
    accounts_tls_ca_file: str = ""  # TLS to accounts when this or a client certificate is set
    accounts_tls_cert_file: str = ""  # client certificate for mutual TLS, with its key
    accounts_tls_key_file: str = ""
    metrics_port: int = 9102  # Prometheus /metrics over HTTP; 0: no metrics endpoint
    otlp_endpoint: str = ""  # OpenTelemetry traces go there over OTLP/gRPC; "": tracing off
    stream: str = "ACCOUNTS"
    stream_subjects: tuple[str, ...] = ("accounts.>",)
    subject: str = "accounts.thumbnail.requested"
    durable: str = "imaging"


def _int(env: Mapping[str, str], key: str, default: int, minimum: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{key} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{key} must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{key} must be a number, got {raw!r}") from None
    if not value > 0:
        raise SettingsError(f"{key} must be a positive number of seconds, got {raw!r}")
    return value


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


def _host_port(env: Mapping[str, str], key: str, default: str) -> str:
    value = env.get(key, "").strip() or default
    host, _, port = value.rpartition(":")
    if "://" in value or not host or not port.isdigit():
        raise SettingsError(f"{key} must be host:port without a scheme, got {value!r}")
    return value


def _bucket(env: Mapping[str, str]) -> str:
    value = env.get("S3_BUCKET", "").strip() or "avatars"
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value):
        raise SettingsError(f"S3_BUCKET must be a valid S3 bucket name, got {value!r}")
    return value


def _log_level(env: Mapping[str, str]) -> str:
    level = env.get("LOG_LEVEL", "").strip().upper() or "INFO"
    if level not in logging.getLevelNamesMapping():
        raise SettingsError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    return level


def _file(env: Mapping[str, str], key: str) -> str:
    path = env.get(key, "").strip()
    if path and not os.path.isfile(path):
        raise SettingsError(f"{key} names no readable file: {path!r}")
    return path


def _paired(env: Mapping[str, str], cert_key: str, key_key: str) -> tuple[str, str]:
    cert, key = _file(env, cert_key), _file(env, key_key)
    if bool(cert) != bool(key):
        raise SettingsError(f"{cert_key} and {key_key} must be set together")
    return cert, key


def from_env(env: Mapping[str, str]) -> Settings:
    """Builds the settings; raises SettingsError naming the first bad key."""
    retry_base = _float(env, "RETRY_BASE_SECONDS", 1.0)
    retry_max = _float(env, "RETRY_MAX_SECONDS", 60.0)
    if retry_max < retry_base:
        raise SettingsError("RETRY_MAX_SECONDS must not be below RETRY_BASE_SECONDS")
    tls_cert, tls_key = _paired(env, "TLS_CERT_FILE", "TLS_KEY_FILE")
    client_cert, client_key = _paired(env, "ACCOUNTS_TLS_CERT_FILE", "ACCOUNTS_TLS_KEY_FILE")
    return Settings(
        nats_url=env.get("NATS_URL", "").strip() or "nats://127.0.0.1:4222",
        s3_endpoint=_host_port(env, "S3_ENDPOINT", "127.0.0.1:9000"),
        s3_access_key=env.get("S3_ACCESS_KEY", "minioadmin"),
        s3_secret_key=env.get("S3_SECRET_KEY", "minioadmin"),
        s3_bucket=_bucket(env),
        s3_secure=_bool(env, "S3_SECURE", False),
        s3_region=env.get("S3_REGION", "").strip() or "us-east-1",
        accounts_addr=_host_port(env, "ACCOUNTS_ADDR", "127.0.0.1:50051"),
        internal_token=_required(env, "INTERNAL_TOKEN"),
        port=_port(env),
        render_processes=_int(env, "RENDER_PROCESSES", os.cpu_count() or 1, minimum=1),
        render_max_tasks_per_child=_int(env, "RENDER_MAX_TASKS_PER_CHILD", 500, minimum=1),
        render_max_megapixels_in_flight=_int(
            env, "RENDER_MAX_MEGAPIXELS_IN_FLIGHT", 100, minimum=1
        ),
        max_avatar_bytes=_int(env, "MAX_AVATAR_BYTES", 20 * 1024 * 1024, minimum=1),
        max_pixels=_int(env, "MAX_PIXELS", 50_000_000, minimum=1),
        ack_wait_seconds=_float(env, "ACK_WAIT_SECONDS", 30.0),
        max_deliver=_int(env, "MAX_DELIVER", 6, minimum=1),
        retry_base_seconds=retry_base,
        retry_max_seconds=retry_max,
        shutdown_grace_seconds=_float(env, "SHUTDOWN_GRACE_SECONDS", 20.0),
        log_level=_log_level(env),
        tls_cert_file=tls_cert,
        tls_key_file=tls_key,
        accounts_tls_ca_file=_file(env, "ACCOUNTS_TLS_CA_FILE"),
        accounts_tls_cert_file=client_cert,
        accounts_tls_key_file=client_key,
        metrics_port=_port(env, "IMAGING_METRICS_PORT", 9102),
        otlp_endpoint=_otlp_endpoint(env),
    )


def _port(env: Mapping[str, str], key: str = "IMAGING_PORT", default: int = 50052) -> int:
    port = _int(env, key, default, minimum=0)
    if port > 65535:
        raise SettingsError(f"{key} must be 0..65535, got {port}")
    return port


def _otlp_endpoint(env: Mapping[str, str]) -> str:
    value = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if value and not value.startswith(("http://", "https://")):
        raise SettingsError(
            f"OTEL_EXPORTER_OTLP_ENDPOINT must start with http:// or https://, got {value!r}"
        )
    return value
