"""Avatar intake: header checks, stored originals, and uploads issued by CreateAvatarUpload."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from psycopg_pool import AsyncConnectionPool

from accounts_service import db
from accounts_service.avatar import AvatarInfo, AvatarLimits, AvatarRejected, inspect_avatar
from accounts_service.errors import InvalidArgument, Unavailable
from accounts_service.storage import Storage

UPLOAD_TTL = timedelta(hours=1)
UPLOAD_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif", "image/avif"})
Avatar = bytes | str  # inline image bytes, or an upload key from CreateAvatarUpload


@dataclass(frozen=True)
class Upload:
    object: str
    url: str
    expire_time: datetime


class AvatarIntake:
    def __init__(
        self, pool: AsyncConnectionPool[db.Conn], storage: Storage, limits: AvatarLimits
    ) -> None:
        self._pool = pool
        self._storage = storage
        self._limits = limits

    def check(self, data: bytes, field: str) -> AvatarInfo:
        """Header only; InvalidArgument on `field` with the failure code."""
        try:
            return inspect_avatar(data, self._limits)
        except AvatarRejected as exc:
            raise InvalidArgument(field, exc.reason, exc.code) from exc

    async def store(self, avatar: Avatar, key: str) -> str:
        """Checks the avatar and stores it at `key`; returns its content type.

        An upload key is accepted only if CreateAvatarUpload issued it and no user used it yet
        (claiming it is the caller's job, inside its transaction).
        """
        if isinstance(avatar, bytes):
            info = self.check(avatar, "avatar_image")
            await self._storage.put_original(key, avatar, info.content_type)
            return info.content_type
        await self._check_issued(avatar)
        stat = await self._storage.stat(avatar)
        if stat is None:
            raise InvalidArgument("avatar_object", "the upload never arrived", "SOURCE_MISSING")
        if stat.size > self._limits.max_bytes:
            raise InvalidArgument(
                "avatar_object",
                f"is {stat.size} bytes, over the {self._limits.max_bytes} limit",
                "TOO_LARGE",
            )
        # The whole object: WebP and AVIF openers read the full file, not just a header.
        info = self.check(await self._storage.read_head(avatar, stat.size), "avatar_object")
        await self._storage.copy(avatar, key)
        return info.content_type

    async def issue_upload(self, content_type: str, content_length: int) -> Upload:
        """A presigned PUT under uploads/; only keys issued here are accepted later."""
        violations = []
        if content_type not in UPLOAD_TYPES:
            violations.append(("content_type", "must be image/jpeg, png, webp, gif or avif"))
        if not 0 < content_length <= self._limits.max_bytes:
            violations.append(
                ("content_length", f"must be between 1 and {self._limits.max_bytes} bytes")
            )
        if violations:
            raise InvalidArgument.many(violations)
        key = f"uploads/{uuid.uuid4()}"
        expire_time = datetime.now(UTC) + UPLOAD_TTL
        async with self._pool.connection() as conn:
            await db.insert_upload(conn, key, content_type, content_length, expire_time)
        url = self._storage.upload_url(key, UPLOAD_TTL)
        return Upload(object=key, url=url, expire_time=expire_time)

    async def discard(self, key: str) -> None:
        """Best effort: an orphaned object costs storage, not correctness."""
        with contextlib.suppress(Unavailable):
            await self._storage.delete(key)

    async def _check_issued(self, obj: str) -> None:
        async with self._pool.connection() as conn:
            upload = await db.get_upload(conn, obj) if obj.startswith("uploads/") else None
        if upload is None:
            raise InvalidArgument("avatar_object", "was not issued by CreateAvatarUpload")
        if upload.used_by is not None:
            raise InvalidArgument("avatar_object", "is already used by another user")
