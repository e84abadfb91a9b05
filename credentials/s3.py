"""S3 credentials for both services: static keys from the settings, else AWS's standard chain,
through minio's credential providers.

The first source that is *configured* is the one used, as the AWS SDKs do: S3_ACCESS_KEY and
S3_SECRET_KEY; then AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (with AWS_SESSION_TOKEN for
temporary keys); then a web identity token file (EKS IRSA: AWS_WEB_IDENTITY_TOKEN_FILE and
AWS_ROLE_ARN); then container credentials (ECS, and EKS Pod Identity:
AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI with AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]);
then the EC2 instance metadata service. A configured source that fails is an error, never a
fall-through to the next one (minio's ChainedProvider would fall through, so that a failing
IRSA set-up would silently run with the node's instance role, and it reports every failure as
"All providers fail to fetch credentials").

Every value comes from the settings' mapping (read once at start), not from os.environ: minio's
IamAwsProvider reads os.environ in its constructor, ahead of its arguments, and has no argument
for the token file, so AwsChainProvider sets its inputs from the mapping after constructing it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import certifi
import urllib3
from minio.credentials.credentials import Credentials
from minio.credentials.providers import IamAwsProvider, Provider, StaticProvider
from minio.error import MinioException

from credentials.nats_auth import CredentialError

# Temporary credentials are fetched again this long before they expire (minio's own margin is
# 10 s): a URL presigned with them stops working when they expire.
REFRESH_MARGIN = timedelta(minutes=5)
RETRY_EARLY_AFTER = timedelta(seconds=30)  # after a failed refresh within the margin
# Hosts a plain-HTTP AWS_CONTAINER_CREDENTIALS_FULL_URI may name, as in the AWS SDKs: ECS,
# EKS Pod Identity (IPv4 and IPv6), and loopback addresses.
_CONTAINER_HOSTS = frozenset({"169.254.170.2", "169.254.170.23", "fd00:ec2::23", "localhost"})
_STATUS = re.compile(r"HTTP status code (\d{3})")


class S3CredentialError(MinioException):
    """Temporary S3 credentials could not be had. The message names the source and, when there
    was one, the HTTP status; never a URL or an exception's text (minio's name the web identity
    token in the STS URL). A MinioException, so that both services' storage wrappers report it
    as storage being unavailable."""


@dataclass(frozen=True)
class S3Auth:
    """Where the S3 credentials come from (`source`, a setting's name or "instance metadata")
    and what that source needs. repr shows no secret."""

    source: str = "instance metadata"
    access_key: str = ""
    secret_key: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)
    web_identity_token_file: str = ""
    role_arn: str = ""
    role_session_name: str = ""
    region: str = ""  # STS' region: AWS_REGION, else AWS_DEFAULT_REGION; "": the global STS
    sts_endpoint: str = ""  # AWS_ENDPOINT_URL_STS; "": AWS' STS for `region`
    container_relative_uri: str = ""
    container_full_uri: str = ""
    container_token: str = field(default="", repr=False)
    container_token_file: str = ""
    metadata_endpoint: str = ""  # AWS_EC2_METADATA_SERVICE_ENDPOINT; "": 169.254.169.254

    @property
    def static(self) -> bool:
        return bool(self.access_key)

    def secrets(self) -> list[str]:
        """The secret values known at start, for the log scrubber. Fetched credentials and
        token files' contents are never logged: S3CredentialError does not quote them."""
        return [s for s in (self.secret_key, self.session_token, self.container_token) if s]


def s3_auth_from_env(env: Mapping[str, str]) -> S3Auth:
    """The first configured source in `env`; CredentialError (naming the setting, quoting no
    secret) for a half-set pair, a missing file or a container URI the AWS SDKs refuse."""
    get = {key: value.strip() for key, value in env.items()}.get
    s3_key, s3_secret = get("S3_ACCESS_KEY", ""), get("S3_SECRET_KEY", "")
    if bool(s3_key) != bool(s3_secret):
        raise CredentialError("S3_ACCESS_KEY and S3_SECRET_KEY must be set together")
    if s3_key:
        return S3Auth(source="S3_ACCESS_KEY", access_key=s3_key, secret_key=s3_secret)
    aws_key, aws_secret = get("AWS_ACCESS_KEY_ID", ""), get("AWS_SECRET_ACCESS_KEY", "")
    if bool(aws_key) != bool(aws_secret):
        raise CredentialError("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together")
    if aws_key:
        return S3Auth(
            source="AWS_ACCESS_KEY_ID",
            access_key=aws_key,
            secret_key=aws_secret,
            session_token=get("AWS_SESSION_TOKEN", ""),
        )
    common = {
        "region": get("AWS_REGION", "") or get("AWS_DEFAULT_REGION", ""),
        "sts_endpoint": _http_url("AWS_ENDPOINT_URL_STS", get("AWS_ENDPOINT_URL_STS", "")),
        "metadata_endpoint": _http_url(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT", get("AWS_EC2_METADATA_SERVICE_ENDPOINT", "")
        ).rstrip("/"),
    }
    token_file = get("AWS_WEB_IDENTITY_TOKEN_FILE", "")
    if token_file:
        if not get("AWS_ROLE_ARN", ""):
            raise CredentialError("AWS_WEB_IDENTITY_TOKEN_FILE needs AWS_ROLE_ARN")
        return S3Auth(
            source="AWS_WEB_IDENTITY_TOKEN_FILE",
            web_identity_token_file=_file("AWS_WEB_IDENTITY_TOKEN_FILE", token_file),
            role_arn=get("AWS_ROLE_ARN", ""),
            role_session_name=get("AWS_ROLE_SESSION_NAME", ""),
            **common,
        )
    container = {
        "container_token": get("AWS_CONTAINER_AUTHORIZATION_TOKEN", ""),
        "container_token_file": _file(
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", ""),
        ),
    }
    relative = get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "")
    if relative:
        return S3Auth(
            source="AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            container_relative_uri=relative if relative.startswith("/") else f"/{relative}",
            **container,
            **common,
        )
    full = get("AWS_CONTAINER_CREDENTIALS_FULL_URI", "")
    if full:
        _check_container_uri(full)
        return S3Auth(
            source="AWS_CONTAINER_CREDENTIALS_FULL_URI",
            container_full_uri=full,
            **container,
            **common,
        )
    return S3Auth(**common)


def s3_credentials(auth: S3Auth) -> Provider:
    """The minio credential provider for `auth`: one per process, shared by its clients, so
    that temporary credentials are fetched once and refreshed before they expire."""
    if auth.static:
        return StaticProvider(auth.access_key, auth.secret_key, auth.session_token or None)
    return AwsChainProvider(auth)


def _http_client() -> urllib3.PoolManager:
    """Short timeouts: off EC2 the metadata address does not answer at all."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=2.0, read=5.0),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
        cert_reqs="CERT_REQUIRED",
        ca_certs=certifi.where(),
    )


class AwsChainProvider(IamAwsProvider):
    """minio's IamAwsProvider (web identity through STS, then container credentials, then
    instance metadata, the first configured) with its inputs from an S3Auth, credentials kept
    until REFRESH_MARGIN before they expire, and failures as S3CredentialError. Thread-safe:
    both services call it from several threads (minio's clients run in asyncio.to_thread)."""

    def __init__(self, auth: S3Auth, margin: timedelta = REFRESH_MARGIN) -> None:
        if auth.web_identity_token_file:
            endpoint = auth.sts_endpoint
        elif auth.container_relative_uri or auth.container_full_uri:
            endpoint = ""
        else:
            endpoint = auth.metadata_endpoint
        super().__init__(custom_endpoint=endpoint or None, http_client=_http_client())
        # minio 7.2.20's constructor took these from os.environ first; the mapping's win.
        self._identity_file = auth.web_identity_token_file or None
        self._role_arn = auth.role_arn or None
        self._role_session_name = auth.role_session_name or None
        self._aws_region = auth.region or None
        self._relative_uri = auth.container_relative_uri or None
        self._full_uri = auth.container_full_uri or None
        self._token = auth.container_token or None
        self._token_file = auth.container_token_file or None
        self._source = auth.source
        self._margin = margin
        self._lock = threading.Lock()  # one fetch at a time; the others wait for its result
        self._quiet_until = 0.0  # time.monotonic() before which a failed early refresh rests

    def retrieve(self) -> Credentials:
        with self._lock:
            held = self._credentials
            now = datetime.now(UTC).replace(tzinfo=None)  # minio's expirations are naive UTC
            if held is None or held.expiration is None or held.is_expired():
                return self._fetch()
            if held.expiration - self._margin > now or time.monotonic() < self._quiet_until:
                return held
            # An early refresh: when it fails, the held credentials serve until they expire
            # (as the AWS SDKs' advisory refresh), tried again at most every RETRY_EARLY_AFTER.
            self._credentials = None  # else minio would keep them until 10 s before expiry
            try:
                return self._fetch()
            except S3CredentialError:
                self._credentials = held
                self._quiet_until = time.monotonic() + RETRY_EARLY_AFTER.total_seconds()
                return held

    def _fetch(self) -> Credentials:
        try:
            return super().retrieve()
        except (ValueError, KeyError, TypeError, OSError, urllib3.exceptions.HTTPError) as exc:
            status = _STATUS.search(str(exc)) if isinstance(exc, ValueError) else None
            detail = f"HTTP status {status[1]}" if status else type(exc).__name__
            raise S3CredentialError(
                f"no S3 credentials from {self._source}: {detail}"
            ) from None  # minio's messages may quote the web identity token


def _file(key: str, path: str) -> str:
    if path and not os.path.isfile(path):
        raise CredentialError(f"{key} names no readable file: {path!r}")
    return path


def _http_url(key: str, value: str) -> str:
    if value and urlsplit(value).scheme not in ("http", "https"):
        raise CredentialError(f"{key} must start with http:// or https://, got {value!r}")
    return value


def _check_container_uri(uri: str) -> None:
    """Plain HTTP only to the container agents' addresses or loopback, as the AWS SDKs allow:
    the token would otherwise cross a network in clear."""
    parts = urlsplit(uri)
    if parts.scheme == "https":
        return
    host = parts.hostname or ""
    if parts.scheme == "http" and (host in _CONTAINER_HOSTS or _is_loopback(host)):
        return
    raise CredentialError(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI must be https://, or http:// to 169.254.170.2, "
        f"169.254.170.23, [fd00:ec2::23] or a loopback address, got {uri!r}"
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
