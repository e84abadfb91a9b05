"""S3 (any, via the blocking minio client run in threads): originals in, thumbnails out."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Callable
from typing import TypeVar

import certifi
import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from credentials.s3 import S3Auth, s3_credentials
from imaging_service.errors import SourceMissing, StorageUnavailable

T = TypeVar("T")

PNG_CONTENT_TYPE = "image/png"
# Keys carry the avatar generation, so a thumbnail never changes once written.
IMMUTABLE = "public, max-age=31536000, immutable"
_MISSING = frozenset({"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"})


def http_client(secure: bool, ca_file: str = "") -> urllib3.PoolManager:
    """Short timeouts and two quick retries: minio's default pool can hang for minutes when S3
    is down, and the queue retries with back-off anyway. HTTPS checks S3's certificate against
    ``ca_file`` (S3_CA_FILE), else certifi's CAs."""
    retries = urllib3.Retry(
        total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504), raise_on_status=False
    )
    timeout = urllib3.Timeout(connect=2.0, read=20.0)
    if secure:
        return urllib3.PoolManager(
            timeout=timeout,
            retries=retries,
            maxsize=16,
            cert_reqs="CERT_REQUIRED",
            ca_certs=ca_file or certifi.where(),
        )
    return urllib3.PoolManager(timeout=timeout, retries=retries, maxsize=16)


class Storage:
    """Reads originals and writes thumbnails in one bucket. Nothing connects until a call."""

    def __init__(self, client: Minio, bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    @classmethod
    def connect(
        cls,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool,
        region: str,
        ca_file: str = "",
        auth: S3Auth | None = None,
    ) -> Storage:
        """`auth` (the settings' s3_auth) says where credentials come from, the AWS chain
        included; without it, `access_key` and `secret_key` are the credentials."""
        if auth is None:
            if not (access_key and secret_key):
                raise ValueError("Storage.connect needs access_key and secret_key, or auth")
            auth = S3Auth(source="S3_ACCESS_KEY", access_key=access_key, secret_key=secret_key)
        client = Minio(
            endpoint,
            credentials=s3_credentials(auth),
            secure=secure,
            region=region,
            http_client=http_client(secure, ca_file),
        )
        return cls(client, bucket)

    async def check(self) -> None:
        """Raises StorageUnavailable unless the bucket exists and answers."""
        exists = await _call(lambda: self._client.bucket_exists(self._bucket))
        if not exists:
            raise StorageUnavailable(f"bucket {self._bucket!r} does not exist")

    async def get_original(self, key: str, max_bytes: int) -> bytes:
        """At most ``max_bytes + 1`` bytes, so an oversized object is rejected by the renderer
        without being read whole. Raises SourceMissing or StorageUnavailable."""
        return await _call(lambda: self._read(key, max_bytes + 1))

    async def put_thumbnail(self, key: str, png: bytes) -> bool:
        """Overwrites: the same key always gets the same bytes, so a retry is harmless.

        True when the store's answer shows that it holds exactly ``png``: the ETag of a
        single-part PUT is the MD5 of the bytes stored in AWS S3 (unless encrypted with SSE-KMS
        or SSE-C), SeaweedFS and MinIO. False when the ETag is something else: then only
        reading the object back can tell."""

        def put() -> bool:
            written = self._client.put_object(
                self._bucket,
                key,
                io.BytesIO(png),
                len(png),
                content_type=PNG_CONTENT_TYPE,
                metadata={"Cache-Control": IMMUTABLE},
            )
            md5 = hashlib.md5(png, usedforsecurity=False).hexdigest()
            return (written.etag or "").strip('"').lower() == md5

        return await _call(put)

    async def stat(self, key: str) -> tuple[int, str]:
        """(size in bytes, content type). Raises SourceMissing or StorageUnavailable."""
        info = await _call(lambda: self._client.stat_object(self._bucket, key))
        return info.size or 0, info.content_type or ""

    async def remove(self, key: str) -> None:
        await _call(lambda: self._client.remove_object(self._bucket, key))

    def _read(self, key: str, length: int) -> bytes:
        try:
            response = self._client.get_object(self._bucket, key, length=length)
        except S3Error as exc:
            if exc.code == "InvalidRange":  # any range of an empty object
                return b""
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()


async def _call(fn: Callable[[], T]) -> T:
    try:
        return await asyncio.to_thread(fn)
    except S3Error as exc:
        if exc.code in _MISSING:
            where = f"{exc.object_name!r} in bucket {exc.bucket_name!r}"
            raise SourceMissing(f"no object {where}") from exc
        raise StorageUnavailable(f"S3 refused: {exc.code}: {exc.message}") from exc
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise StorageUnavailable(f"S3 unreachable: {type(exc).__name__}: {exc}") from exc
