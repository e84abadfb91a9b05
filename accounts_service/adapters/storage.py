"""S3 for the accounts service: originals, client URLs, uploads, removal by prefix. Any S3
serves (SeaweedFS locally, AWS S3 or another in production), through the minio client.

Every minio, urllib3 and socket error becomes ours here: ObjectMissing for a key that is not
there, Unavailable for anything else (storage down, or a refusal such as AccessDenied).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ParamSpec, TypeVar
from urllib.parse import quote

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import REPLACE, CopySource
from minio.error import MinioException, S3Error

from accounts_service.adapters.presign import presigned_url
from accounts_service.errors import ObjectMissing, Unavailable
from accounts_service.settings import Settings
from credentials.s3 import S3CredentialError, s3_credentials

P = ParamSpec("P")
R = TypeVar("R")
IMMUTABLE = "public, max-age=31536000, immutable"
_MISSING = {"NoSuchKey", "NoSuchObject", "NoSuchBucket"}


@dataclass(frozen=True)
class ObjectHead:
    data: bytes  # the first bytes asked for; all of them when the object is smaller
    size: int  # of the whole object


def _http_client(secure: bool, ca_file: str) -> urllib3.PoolManager:
    """HTTPS checks S3's certificate against `ca_file` (S3_CA_FILE), else certifi's CAs."""
    # minio's default retries for minutes when S3 is down; callers want a prompt UNAVAILABLE.
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=3.0, read=30.0),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
        maxsize=16,
        cert_reqs="CERT_REQUIRED" if secure else None,
        ca_certs=(ca_file or certifi.where()) if secure else None,
    )


def _object_size(headers: urllib3.HTTPHeaderDict) -> int:
    """The whole object's size: after the slash of `Content-Range: bytes 0-65535/4194304` in a
    partial answer, else (the whole object sent) its Content-Length."""
    total = (headers.get("Content-Range") or "").rpartition("/")[2]
    if not total.isdigit():
        total = headers.get("Content-Length") or ""
    if not total.isdigit():
        raise Unavailable("object storage answered a ranged read without the object's size")
    return int(total)


def signing_window(now: datetime, window_seconds: int) -> datetime:
    """The start of the window of `window_seconds` that `now` is in, windows counted from the
    Unix epoch: every replica puts the same X-Amz-Date on a URL signed within one window."""
    seconds = int(now.timestamp())
    return datetime.fromtimestamp(seconds - seconds % window_seconds, UTC)


class Storage:
    """Speaks in our keys (see keys.py); raises only our errors. `clock` (UTC) dates the URLs
    handed out."""

    def __init__(
        self, settings: Settings, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._settings = settings
        self._bucket = settings.s3_bucket
        self._expiry = timedelta(seconds=settings.url_expiry_seconds)
        self._window = settings.url_window_seconds
        self._clock = clock
        self._public_base = settings.public_base_url.rstrip("/")
        # One provider for both clients: temporary credentials are fetched once per refresh.
        self._credentials = s3_credentials(settings.s3_auth)
        self._client = Minio(
            settings.s3_endpoint,
            credentials=self._credentials,
            secure=settings.s3_secure,
            region=settings.s3_region,
            http_client=_http_client(settings.s3_secure, settings.s3_ca_file),
        )
        # Presigning is offline; URLs must name the endpoint as clients reach it.
        self._public = Minio(
            settings.s3_public_endpoint,
            credentials=self._credentials,
            secure=settings.s3_public_secure,
            region=settings.s3_region,
        )

    async def _call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except S3Error as exc:  # storage answered with a 4xx or 5xx
            if exc.code in _MISSING:
                raise ObjectMissing(f"no object at that key ({exc.code})") from exc
            raise Unavailable(f"object storage error: {exc.code}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unavailable(f"object storage unreachable: {exc}") from exc

    async def check(self) -> None:
        """Raises Unavailable unless the bucket exists and answers."""
        if not await self._call(self._client.bucket_exists, self._bucket):
            raise Unavailable(f"bucket {self._bucket!r} does not exist")

    async def put_original(self, key: str, data: bytes, content_type: str) -> None:
        await self._call(
            self._client.put_object,
            self._bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type=content_type,
            metadata={"Cache-Control": IMMUTABLE},
        )

    async def read_head(self, key: str, length: int) -> ObjectHead:
        """The first `length` bytes of an object and its whole size, in one ranged GET."""

        def read() -> ObjectHead:
            try:
                resp = self._client.get_object(self._bucket, key, offset=0, length=length)
            except S3Error as exc:
                if exc.code == "InvalidRange":  # a range from byte 0 of an empty object
                    return ObjectHead(b"", 0)
                raise
            try:
                return ObjectHead(bytes(resp.read()), _object_size(resp.headers))
            finally:
                resp.close()
                resp.release_conn()

        return await self._call(read)

    async def copy(self, source: str, target: str, content_type: str) -> None:
        """Copies within the bucket, storage-side; the copy gets `content_type` (what its
        bytes are, not what the uploader declared) and the originals' caching."""
        await self._call(
            self._client.copy_object,
            self._bucket,
            target,
            CopySource(self._bucket, source),
            metadata={"Content-Type": content_type, "Cache-Control": IMMUTABLE},
            metadata_directive=REPLACE,
        )

    async def delete(self, key: str) -> None:
        await self._call(self._client.remove_object, self._bucket, key)

    async def delete_prefix(self, prefix: str) -> int:
        """Removes every object whose key starts with `prefix`; returns how many there were."""

        def remove_all() -> int:
            keys = [
                str(o.object_name)
                for o in self._client.list_objects(self._bucket, prefix=prefix, recursive=True)
            ]
            for key in keys:
                self._client.remove_object(self._bucket, key)
            return len(keys)

        return await self._call(remove_all)

    def url(self, key: str) -> str:
        """Where clients fetch `key`: a plain URL under PUBLIC_BASE_URL if set, else a
        presigned GET signed at the start of the current URL_WINDOW_SECONDS window and valid
        URL_EXPIRY_SECONDS past its end, so that every read in one window gets the same URL
        (browser and CDN caches hit). No request, unless temporary credentials need fetching."""
        if self._public_base:
            return f"{self._public_base}/{quote(key)}"
        signed_at = signing_window(self._clock(), self._window)
        valid_for = timedelta(seconds=self._window) + self._expiry
        try:
            return str(
                self._public.presigned_get_object(
                    self._bucket, key, expires=valid_for, request_date=signed_at
                )
            )
        except S3CredentialError as exc:
            raise Unavailable(f"object storage credentials: {exc}") from exc

    def upload_url(
        self, key: str, expires: timedelta, content_type: str, content_length: int
    ) -> str:
        """A presigned PUT that storage accepts only with exactly this Content-Type and
        Content-Length (both are signed headers)."""
        s = self._settings
        try:
            creds = self._credentials.retrieve()  # refreshed by the provider before expiry
        except S3CredentialError as exc:
            raise Unavailable(f"object storage credentials: {exc}") from exc
        return presigned_url(
            method="PUT",
            endpoint=s.s3_public_endpoint,
            secure=s.s3_public_secure,
            bucket=self._bucket,
            key=key,
            region=s.s3_region,
            access_key=creds.access_key,
            secret_key=creds.secret_key,
            session_token=creds.session_token,
            now=self._clock(),
            expires=expires,
            headers={"Content-Type": content_type, "Content-Length": str(content_length)},
        )
