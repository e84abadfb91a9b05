"""S3 (MinIO) for the accounts service: originals, presigned URLs, uploads."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import ParamSpec, TypeVar

import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.error import MinioException, S3Error

from accounts_service.errors import Unavailable
from accounts_service.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")
IMMUTABLE = "public, max-age=31536000, immutable"
_MISSING = {"NoSuchKey", "NoSuchObject", "NoSuchBucket"}


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    content_type: str


def _http_client() -> urllib3.PoolManager:
    # minio's default retries for minutes when S3 is down; callers want a prompt UNAVAILABLE.
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=3.0, read=30.0),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
        maxsize=16,
    )


class Storage:
    """Speaks in our keys; raises Unavailable when storage cannot be reached."""

    def __init__(self, settings: Settings) -> None:
        self._bucket = settings.s3_bucket
        self._expiry = timedelta(seconds=settings.url_expiry_seconds)
        self._client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            secure=settings.s3_secure,
            region=settings.s3_region,
            http_client=_http_client(),
        )
        # Presigning is offline; URLs must name the endpoint as clients reach it.
        self._public = Minio(
            settings.s3_public_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            secure=settings.s3_public_secure,
            region=settings.s3_region,
        )

    async def _call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except S3Error:
            raise
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

    async def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = await self._call(self._client.stat_object, self._bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING:
                return None
            raise Unavailable(f"object storage error: {exc.code}") from exc
        return ObjectInfo(size=int(st.size or 0), content_type=st.content_type or "")

    async def read_head(self, key: str, length: int) -> bytes:
        """The first `length` bytes of an object (enough for an image header)."""

        def read() -> bytes:
            resp = self._client.get_object(self._bucket, key, offset=0, length=length)
            try:
                return bytes(resp.read())
            finally:
                resp.close()
                resp.release_conn()

        return bytes(await self._call(read))

    async def copy(self, source: str, target: str) -> None:
        await self._call(
            self._client.copy_object, self._bucket, target, CopySource(self._bucket, source)
        )

    async def delete(self, key: str) -> None:
        await self._call(self._client.remove_object, self._bucket, key)

    def url(self, key: str) -> str:
        """Presigned GET for clients; computed locally, no request."""
        return str(self._public.presigned_get_object(self._bucket, key, expires=self._expiry))

    def upload_url(self, key: str, expires: timedelta) -> str:
        return str(self._public.presigned_put_object(self._bucket, key, expires=expires))
