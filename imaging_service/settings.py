"""Settings of the imaging service, read once from the environment at start."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from credentials.nats_auth import CredentialError, NatsAuth, nats_auth_from_env, nats_secrets
from credentials.redact import redacted_repr
from credentials.s3 import S3Auth, s3_auth_from_env
from env_settings import SettingsError as SettingsError  # re-exported: callers catch it here
from env_settings import boolean, readable_file, required
from image_policy.prescan import ScanLimits

_SCAN = ScanLimits()
MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # the gRPC server's receive and send limit


@dataclass(frozen=True)
class Settings:
    """Durations are in seconds, sizes in bytes. repr (the start-up log line) shows the NATS URL
    without credentials and no secret at all."""

    nats_url: str  # may carry user:password or a token
    s3_endpoint: str
    s3_access_key: str = field(repr=False)  # S3_ACCESS_KEY; "" for AWS' chain (s3_auth)
    s3_secret_key: str = field(repr=False)
    s3_bucket: str
    s3_secure: bool
    s3_region: str
    accounts_addr: str
    internal_token: str = field(repr=False)
    port: int
    render_processes: int
    render_max_tasks_per_child: int  # renders before a render process is replaced
    render_max_megapixels_in_flight: int  # decoded megapixels rendering at once (pre-scan)
    # A render may take floor + per_megapixel * its decoded megapixels; past that it is killed
    # and the image fails with TOO_COMPLEX.
    render_budget_floor_seconds: float
    render_budget_seconds_per_megapixel: float
    render_thumbnails_max_in_flight: int  # previews rendering or waiting; past it: refused
    max_avatar_bytes: int
    max_pixels: int
    ack_wait_seconds: float
    max_deliver: int
    # Deliveries unacknowledged at once on the durable consumer, shared by every replica:
    # replicas x render_processes above it leaves replicas idle (README, Configuration).
    max_ack_pending: int
    retry_base_seconds: float
    retry_max_seconds: float
    shutdown_grace_seconds: float
    log_level: str
    # Caps of the structural pre-scan of uploads (image_policy.ScanLimits, which says why these
    # defaults); past one an image fails with TOO_COMPLEX.
    max_segments: int = _SCAN.max_segments  # segments, chunks, blocks, boxes before 1st frame
    max_metadata_bytes: int = _SCAN.max_metadata_bytes  # EXIF, ICC, XMP, text, in total
    max_scans: int = _SCAN.max_scans  # progressive scans in a JPEG frame
    max_frames: int = _SCAN.max_frames  # animation frames
    max_blocks: int = _SCAN.max_blocks  # structures walked in the whole file
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
    replay_subject: str = "accounts.thumbnail.replayed"  # replayed dead letters; in `stream`
    durable: str = "imaging"
    # Copies JetStream keeps of the stream, the dead-letter stream and the consumer (the
    # consumer follows its stream): 3 on a 3-node cluster survives the loss of any one node.
    stream_replicas: int = 1
    nats_auth: NatsAuth = field(default_factory=NatsAuth)
    s3_auth: S3Auth = field(default_factory=S3Auth)  # where S3 credentials come from
    s3_ca_file: str = ""  # CA bundle for HTTPS to S3; "": certifi's CAs
    # In-flight limits of the gRPC server (grpc_guard); past one a call gets RESOURCE_EXHAUSTED
    # with RetryInfo. Sized for this main process (README, "Hostile input and limits").
    max_concurrent_rpcs: int = 64  # calls in flight, health and reflection aside
    max_concurrent_uploads: int = 16  # RenderThumbnails calls (they carry images)
    # Serialized requests held in memory; an upload counts as MAX_AVATAR_BYTES until it arrives.
    max_request_bytes_in_flight: int = 96 * 1024 * 1024
    max_requests_receiving: int = 2  # other requests being received (each up to the gRPC limit)
    max_streams_per_connection: int = 1024  # HTTP/2 streams one connection may have open
    retry_after_seconds: float = 1.0  # the RetryInfo delay sent with RESOURCE_EXHAUSTED
    keepalive_seconds: float = 30.0  # idle connections pinged this often; a dead peer is
    keepalive_timeout_seconds: float = 10.0  # dropped (with its calls) after this long
    # Connections are closed after this long (+ grace for calls in flight) so that clients
    # re-resolve the name and spread over replicas started since they connected.
    max_connection_age_seconds: float = 300.0
    max_connection_age_grace_seconds: float = 30.0

    def __repr__(self) -> str:
        return redacted_repr(self, url_fields=("nats_url",))

    def secrets(self) -> tuple[str, ...]:
        """Every secret value, for the log filter that keeps them out of log lines."""
        found = [
            *nats_secrets(self.nats_url, self.nats_auth),
            self.s3_secret_key,
            *self.s3_auth.secrets(),
            self.internal_token,
        ]
        return tuple(s for s in found if s)


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


def _host_port(env: Mapping[str, str], key: str, default: str) -> str:
    value = env.get(key, "").strip() or default
    if "://" in value or not _is_host_port(value):
        raise SettingsError(f"{key} must be host:port without a scheme, got {value!r}")
    return value


def _grpc_target(env: Mapping[str, str], key: str, default: str) -> str:
    """host:port, or a gRPC target naming several replicas: `dns:///name:port` (every address
    the name resolves to, e.g. a headless Service) or `ipv4:host:port,host:port`."""
    value = env.get(key, "").strip() or default
    if value.startswith("dns:"):
        name = value.removeprefix("dns:").lstrip("/").rpartition("/")[2]
        if _is_host_port(name):
            return value
    elif value.startswith(("ipv4:", "ipv6:")):
        if all(_is_host_port(a) for a in value.partition(":")[2].split(",")):
            return value
    elif "://" not in value and _is_host_port(value):
        return value
    raise SettingsError(
        f"{key} must be host:port, dns:///name:port or ipv4:host:port,host:port, got {value!r}"
    )


def _is_host_port(value: str) -> bool:
    host, _, port = value.rpartition(":")
    return bool(host) and port.isdigit()


def _stream_replicas(env: Mapping[str, str]) -> int:
    replicas = _int(env, "STREAM_REPLICAS", 1, minimum=1)
    if replicas > 5:  # JetStream's own limit
        raise SettingsError(f"STREAM_REPLICAS must be 1..5, got {replicas}")
    return replicas


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


def _paired(env: Mapping[str, str], cert_key: str, key_key: str) -> tuple[str, str]:
    cert, key = readable_file(env, cert_key), readable_file(env, key_key)
    if bool(cert) != bool(key):
        raise SettingsError(f"{cert_key} and {key_key} must be set together")
    return cert, key


def _nats_auth(env: Mapping[str, str]) -> NatsAuth:
    try:
        return nats_auth_from_env(env)
    except CredentialError as exc:
        raise SettingsError(str(exc)) from exc


def _s3_auth(env: Mapping[str, str]) -> S3Auth:
    try:
        return s3_auth_from_env(env)
    except CredentialError as exc:
        raise SettingsError(str(exc)) from exc


def from_env(env: Mapping[str, str]) -> Settings:
    """Builds the settings; raises SettingsError naming the first bad key."""
    retry_base = _float(env, "RETRY_BASE_SECONDS", 1.0)
    retry_max = _float(env, "RETRY_MAX_SECONDS", 60.0)
    if retry_max < retry_base:
        raise SettingsError("RETRY_MAX_SECONDS must not be below RETRY_BASE_SECONDS")
    tls_cert, tls_key = _paired(env, "TLS_CERT_FILE", "TLS_KEY_FILE")
    client_cert, client_key = _paired(env, "ACCOUNTS_TLS_CERT_FILE", "ACCOUNTS_TLS_KEY_FILE")
    processes = _int(env, "RENDER_PROCESSES", os.cpu_count() or 1, minimum=1)
    max_avatar_bytes = _int(env, "MAX_AVATAR_BYTES", 20 * 1024 * 1024, minimum=1)
    return Settings(
        nats_url=env.get("NATS_URL", "").strip() or "nats://127.0.0.1:4222",
        s3_endpoint=_host_port(env, "S3_ENDPOINT", "127.0.0.1:9000"),
        s3_access_key=env.get("S3_ACCESS_KEY", "").strip(),
        s3_secret_key=env.get("S3_SECRET_KEY", "").strip(),
        s3_auth=_s3_auth(env),
        s3_bucket=_bucket(env),
        s3_secure=boolean(env, "S3_SECURE", False),
        s3_region=env.get("S3_REGION", "").strip() or "us-east-1",
        accounts_addr=_grpc_target(env, "ACCOUNTS_ADDR", "127.0.0.1:50051"),
        internal_token=required(env, "INTERNAL_TOKEN"),
        port=_port(env),
        render_processes=processes,
        render_max_tasks_per_child=_int(env, "RENDER_MAX_TASKS_PER_CHILD", 500, minimum=1),
        render_max_megapixels_in_flight=_int(env, "RENDER_MAX_MEGAPIXELS_IN_FLIGHT", 80, minimum=1),
        render_budget_floor_seconds=_float(env, "RENDER_BUDGET_FLOOR_SECONDS", 5.0),
        render_budget_seconds_per_megapixel=_float(env, "RENDER_BUDGET_SECONDS_PER_MEGAPIXEL", 0.2),
        render_thumbnails_max_in_flight=_int(
            env, "RENDER_THUMBNAILS_MAX_IN_FLIGHT", 2 * processes, minimum=1
        ),
        max_avatar_bytes=max_avatar_bytes,
        max_pixels=_int(env, "MAX_PIXELS", 50_000_000, minimum=1),
        max_segments=_int(env, "MAX_SEGMENTS", _SCAN.max_segments, minimum=1),
        max_metadata_bytes=_int(env, "MAX_METADATA_BYTES", _SCAN.max_metadata_bytes, minimum=0),
        max_scans=_int(env, "MAX_SCANS", _SCAN.max_scans, minimum=1),
        max_frames=_int(env, "MAX_FRAMES", _SCAN.max_frames, minimum=1),
        max_blocks=_int(env, "MAX_BLOCKS", _SCAN.max_blocks, minimum=1),
        ack_wait_seconds=_float(env, "ACK_WAIT_SECONDS", 30.0),
        max_deliver=_int(env, "MAX_DELIVER", 6, minimum=1),
        retry_base_seconds=retry_base,
        retry_max_seconds=retry_max,
        shutdown_grace_seconds=_float(env, "SHUTDOWN_GRACE_SECONDS", 20.0),
        log_level=_log_level(env),
        tls_cert_file=tls_cert,
        tls_key_file=tls_key,
        accounts_tls_ca_file=readable_file(env, "ACCOUNTS_TLS_CA_FILE"),
        accounts_tls_cert_file=client_cert,
        accounts_tls_key_file=client_key,
        metrics_port=_port(env, "IMAGING_METRICS_PORT", 9102),
        otlp_endpoint=_otlp_endpoint(env),
        nats_auth=_nats_auth(env),
        s3_ca_file=readable_file(env, "S3_CA_FILE"),
        max_concurrent_rpcs=_int(env, "MAX_CONCURRENT_RPCS", 64, minimum=1),
        max_concurrent_uploads=_int(env, "MAX_CONCURRENT_UPLOADS", 16, minimum=1),
        max_request_bytes_in_flight=_int(  # room for one image at the limit
            env, "MAX_REQUEST_BYTES_IN_FLIGHT", 96 * 1024 * 1024, minimum=max_avatar_bytes + 65536
        ),
        max_requests_receiving=_int(env, "MAX_REQUESTS_RECEIVING", 2, minimum=1),
        max_streams_per_connection=_int(env, "MAX_STREAMS_PER_CONNECTION", 1024, minimum=1),
        retry_after_seconds=_float(env, "RETRY_AFTER_SECONDS", 1.0),
        keepalive_seconds=_float(env, "KEEPALIVE_SECONDS", 30.0),
        keepalive_timeout_seconds=_float(env, "KEEPALIVE_TIMEOUT_SECONDS", 10.0),
        max_connection_age_seconds=_float(env, "MAX_CONNECTION_AGE_SECONDS", 300.0),
        max_connection_age_grace_seconds=_float(env, "MAX_CONNECTION_AGE_GRACE_SECONDS", 30.0),
        max_ack_pending=_int(env, "MAX_ACK_PENDING", 4 * processes, minimum=1),
        stream_replicas=_stream_replicas(env),
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
