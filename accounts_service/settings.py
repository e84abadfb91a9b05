"""Settings of the accounts service, read once from the environment at start."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from accounts_service.adapters.db.pool import conninfo_secrets
from credentials.nats_auth import CredentialError, NatsAuth, nats_auth_from_env, nats_secrets
from credentials.redact import redacted_repr
from credentials.s3 import S3Auth, s3_auth_from_env
from env_settings import SettingsError as SettingsError  # re-exported: callers catch it here
from env_settings import boolean, readable_file, required
from image_policy.prescan import ScanLimits

_SCAN = ScanLimits()
_MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # the longest X-Amz-Expires S3 accepts


@dataclass(frozen=True)
class Settings:
    """repr (the start-up log line) shows URLs without credentials and no secret at all."""

    database_url: str  # may carry a password, sslmode, sslrootcert (libpq query parameters)
    nats_url: str  # may carry user:password or a token
    s3_endpoint: str
    s3_public_endpoint: str
    s3_access_key: str = field(repr=False)  # S3_ACCESS_KEY; "" for AWS' chain (s3_auth)
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
    # Caps of the structural pre-scan of uploads (image_policy.ScanLimits, which says why these
    # defaults); past one an image is refused with TOO_COMPLEX.
    max_segments: int = _SCAN.max_segments  # segments, chunks, blocks, boxes before 1st frame
    max_metadata_bytes: int = _SCAN.max_metadata_bytes  # EXIF, ICC, XMP, text, in total
    max_scans: int = _SCAN.max_scans  # progressive scans in a JPEG frame
    max_frames: int = _SCAN.max_frames  # animation frames
    max_blocks: int = _SCAN.max_blocks  # structures walked in the whole file
    public_base_url: str = ""  # plain thumbnail URLs under it (a CDN); "" = presigned GETs
    # Presigned GETs are signed at the start of the current window of this many seconds (and
    # stay valid url_expiry_seconds past its end), so reads within a window get the same URL.
    url_window_seconds: int = 3600
    old_generation_grace_seconds: float = 86400.0
    cleanup_every_seconds: float = 5.0
    db_pool_max_waiting: int = 32  # callers queued for a connection; past it RESOURCE_EXHAUSTED
    db_pool_timeout_seconds: float = 2.0  # the longest wait for a connection
    uploads_per_second: float = 10.0  # CreateAvatarUpload per process: a token bucket's rate
    upload_burst: int = 50  # and its size
    prune_every_seconds: float = 300.0  # pruning of outbox events, uploads and request ids
    outbox_retention_seconds: float = 3600.0  # published events kept this long
    request_id_retention_seconds: float = 86400.0  # the contract: at least 24 h
    tls_cert_file: str = ""  # server TLS when set, with tls_key_file
    tls_key_file: str = ""
    tls_client_ca_file: str = ""  # when set, clients must present a certificate it signed
    metrics_port: int = 9101  # Prometheus /metrics over HTTP; 0: no metrics endpoint
    otlp_endpoint: str = ""  # OpenTelemetry traces go there over OTLP/gRPC; "": tracing off
    # The address the gRPC server listens on: "::", every interface (IPv4 too); one address to
    # keep it off the others (several replicas on one host, each on its own address).
    host: str = "::"
    nats_auth: NatsAuth = field(default_factory=NatsAuth)
    s3_auth: S3Auth = field(default_factory=S3Auth)  # where S3 credentials come from
    s3_ca_file: str = ""  # CA bundle for HTTPS to S3; "": the system's (certifi) CAs
    # libpq reads PGPASSWORD itself; it is kept here only so that no log line shows it.
    libpq_password: str = field(default="", repr=False)
    # In-flight limits (grpc_guard); past one a call gets RESOURCE_EXHAUSTED with RetryInfo.
    # Defaults measured to keep the process under 512 MiB RSS (README, "Hostile input and limits").
    max_concurrent_rpcs: int = 64  # calls in flight, WatchUser streams, health and reflection aside
    max_concurrent_uploads: int = 16  # CreateUser and UpdateAvatar calls (they carry avatars)
    # Serialized requests held in memory; an upload counts as MAX_AVATAR_BYTES until it arrives.
    max_request_bytes_in_flight: int = 96 * 1024 * 1024
    max_watch_streams: int = 1000  # WatchUser streams
    max_requests_receiving: int = 2  # other requests being received (each up to the gRPC limit)
    # HTTP/2 streams one connection may have open; more wait in the client. Above the WatchUser
    # cap, so that one client reaches the limits above (and gets RESOURCE_EXHAUSTED) instead.
    max_streams_per_connection: int = 1024
    retry_after_seconds: float = 1.0  # the RetryInfo delay sent with RESOURCE_EXHAUSTED
    keepalive_seconds: float = 30.0  # idle connections pinged this often; a dead peer is
    keepalive_timeout_seconds: float = 10.0  # dropped (with its streams) after this long
    # Connections are closed after this long (+ grace for calls in flight, WatchUser streams
    # included: their clients re-watch) so that clients re-resolve the name and spread over
    # replicas started since they connected.
    max_connection_age_seconds: float = 300.0
    max_connection_age_grace_seconds: float = 30.0

    def __repr__(self) -> str:
        return redacted_repr(self, url_fields=("database_url", "nats_url"))

    def secrets(self) -> tuple[str, ...]:
        """Every secret value, for the log filter that keeps them out of log lines."""
        found = [
            *(conninfo_secrets(self.database_url) or ()),
            *nats_secrets(self.nats_url, self.nats_auth),
            self.s3_secret_key,
            *self.s3_auth.secrets(),
            self.internal_token,
            self.libpq_password,
        ]
        return tuple(s for s in found if s)


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


def _int_at_least(env: Mapping[str, str], key: str, default: int, minimum: int) -> int:
    value = _int(env, key, default)
    if value < minimum:
        raise SettingsError(f"{key} must be at least {minimum}, got {value}")
    return value


def _float_at_least(env: Mapping[str, str], key: str, default: float, minimum: float) -> float:
    value = _float(env, key, default)
    if value < minimum:
        raise SettingsError(f"{key} must be at least {minimum}, got {value}")
    return value


def _tls_files(env: Mapping[str, str]) -> tuple[str, str, str]:
    cert, key, client_ca = (
        readable_file(env, k) for k in ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE")
    )
    if bool(cert) != bool(key):
        raise SettingsError("TLS_CERT_FILE and TLS_KEY_FILE must be set together")
    if client_ca and not cert:
        raise SettingsError("TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE")
    return cert, key, client_ca


def _database_url(env: Mapping[str, str]) -> str:
    """libpq's own variables (PGPASSWORD, PGSSLMODE, PGSSLROOTCERT, ...) still apply to what
    the URL leaves out; libpq reads them itself."""
    value = env.get("DATABASE_URL", "").strip() or "postgresql://postgres@127.0.0.1:5432/avatars"
    if conninfo_secrets(value) is None:
        raise SettingsError("DATABASE_URL is not a valid PostgreSQL URL or conninfo")
    return value


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


def _base_url(env: Mapping[str, str]) -> str:
    value = env.get("PUBLIC_BASE_URL", "").strip()
    if value and not value.startswith(("http://", "https://")):
        raise SettingsError(f"PUBLIC_BASE_URL must start with http:// or https://, got {value!r}")
    return value


def from_env(env: Mapping[str, str]) -> Settings:
    """Builds the settings; raises SettingsError naming the first bad key."""
    s3_endpoint = env.get("S3_ENDPOINT", "127.0.0.1:9000")
    s3_secure = boolean(env, "S3_SECURE", False)
    max_avatar_bytes = _int(env, "MAX_AVATAR_BYTES", 20 * 1024 * 1024)
    max_message_bytes = _int(env, "MAX_MESSAGE_BYTES", 32 * 1024 * 1024)
    if max_message_bytes <= max_avatar_bytes:
        raise SettingsError("MAX_MESSAGE_BYTES must be larger than MAX_AVATAR_BYTES")
    tls_cert, tls_key, tls_client_ca = _tls_files(env)
    url_expiry = _int_at_least(env, "URL_EXPIRY_SECONDS", 3600, 1)
    url_window = _int_at_least(env, "URL_WINDOW_SECONDS", 3600, 1)
    if url_expiry + url_window > _MAX_PRESIGN_SECONDS:
        raise SettingsError(
            "URL_EXPIRY_SECONDS + URL_WINDOW_SECONDS must be at most 604800 (7 days)"
        )
    return Settings(
        database_url=_database_url(env),
        nats_url=env.get("NATS_URL", "nats://127.0.0.1:4222"),
        s3_endpoint=s3_endpoint,
        s3_public_endpoint=env.get("S3_PUBLIC_ENDPOINT", "") or s3_endpoint,
        s3_access_key=env.get("S3_ACCESS_KEY", "").strip(),
        s3_secret_key=env.get("S3_SECRET_KEY", "").strip(),
        s3_auth=_s3_auth(env),
        s3_bucket=env.get("S3_BUCKET", "avatars"),
        s3_secure=s3_secure,
        s3_public_secure=boolean(env, "S3_PUBLIC_SECURE", s3_secure),
        s3_region=env.get("S3_REGION", "us-east-1"),
        internal_token=required(env, "INTERNAL_TOKEN"),
        port=_int(env, "ACCOUNTS_PORT", 50051),
        host=_listen_host(env),
        max_avatar_bytes=max_avatar_bytes,
        max_pixels=_int(env, "MAX_PIXELS", 50_000_000),
        max_segments=_int_at_least(env, "MAX_SEGMENTS", _SCAN.max_segments, 1),
        max_metadata_bytes=_int_at_least(env, "MAX_METADATA_BYTES", _SCAN.max_metadata_bytes, 0),
        max_scans=_int_at_least(env, "MAX_SCANS", _SCAN.max_scans, 1),
        max_frames=_int_at_least(env, "MAX_FRAMES", _SCAN.max_frames, 1),
        max_blocks=_int_at_least(env, "MAX_BLOCKS", _SCAN.max_blocks, 1),
        max_message_bytes=max_message_bytes,
        url_expiry_seconds=url_expiry,
        url_window_seconds=url_window,
        relay_poll_seconds=_float(env, "OUTBOX_POLL_SECONDS", 2.0),
        reconcile_after_seconds=_float(env, "RECONCILE_AFTER_SECONDS", 300.0),
        reconcile_every_seconds=_float(env, "RECONCILE_EVERY_SECONDS", 30.0),
        db_pool_size=_int(env, "DB_POOL_SIZE", 10),
        shutdown_grace_seconds=_float(env, "SHUTDOWN_GRACE_SECONDS", 20.0),
        log_level=env.get("LOG_LEVEL", "INFO").upper(),
        public_base_url=_base_url(env),
        old_generation_grace_seconds=_float(env, "OLD_GENERATION_GRACE_SECONDS", 86400.0),
        cleanup_every_seconds=_float(env, "CLEANUP_EVERY_SECONDS", 5.0),
        db_pool_max_waiting=_int_at_least(env, "DB_POOL_MAX_WAITING", 32, 1),
        db_pool_timeout_seconds=_float_at_least(env, "DB_POOL_TIMEOUT_SECONDS", 2.0, 0.1),
        uploads_per_second=_float_at_least(env, "UPLOADS_PER_SECOND", 10.0, 0.001),
        upload_burst=_int_at_least(env, "UPLOAD_BURST", 50, 1),
        prune_every_seconds=_float_at_least(env, "PRUNE_EVERY_SECONDS", 300.0, 1.0),
        outbox_retention_seconds=_float_at_least(env, "OUTBOX_RETENTION_SECONDS", 3600.0, 0.0),
        request_id_retention_seconds=_float_at_least(
            env, "REQUEST_ID_RETENTION_SECONDS", 86400.0, 86400.0
        ),
        tls_cert_file=tls_cert,
        tls_key_file=tls_key,
        tls_client_ca_file=tls_client_ca,
        metrics_port=_port(env, "ACCOUNTS_METRICS_PORT", 9101),
        otlp_endpoint=_otlp_endpoint(env),
        nats_auth=_nats_auth(env),
        s3_ca_file=readable_file(env, "S3_CA_FILE"),
        libpq_password=env.get("PGPASSWORD", ""),
        max_concurrent_rpcs=_int_at_least(env, "MAX_CONCURRENT_RPCS", 64, 1),
        max_concurrent_uploads=_int_at_least(env, "MAX_CONCURRENT_UPLOADS", 16, 1),
        max_request_bytes_in_flight=_int_at_least(  # room for one avatar at the limit
            env, "MAX_REQUEST_BYTES_IN_FLIGHT", 96 * 1024 * 1024, max_avatar_bytes + 64 * 1024
        ),
        max_watch_streams=_int_at_least(env, "MAX_WATCH_STREAMS", 1000, 1),
        max_requests_receiving=_int_at_least(env, "MAX_REQUESTS_RECEIVING", 2, 1),
        max_streams_per_connection=_int_at_least(env, "MAX_STREAMS_PER_CONNECTION", 1024, 1),
        retry_after_seconds=_float_at_least(env, "RETRY_AFTER_SECONDS", 1.0, 0.001),
        keepalive_seconds=_float_at_least(env, "KEEPALIVE_SECONDS", 30.0, 1.0),
        keepalive_timeout_seconds=_float_at_least(env, "KEEPALIVE_TIMEOUT_SECONDS", 10.0, 1.0),
        max_connection_age_seconds=_float_at_least(env, "MAX_CONNECTION_AGE_SECONDS", 300.0, 1.0),
        max_connection_age_grace_seconds=_float_at_least(
            env, "MAX_CONNECTION_AGE_GRACE_SECONDS", 30.0, 1.0
        ),
    )


def _listen_host(env: Mapping[str, str]) -> str:
    value = env.get("ACCOUNTS_HOST", "").strip().strip("[]") or "::"
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise SettingsError(f"ACCOUNTS_HOST must be an IP address, got {value!r}") from None
    return value


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
