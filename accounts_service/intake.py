"""Avatar intake: header checks, stored originals, and uploads issued by CreateAvatarUpload."""

from __future__ import annotations

import contextlib
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from psycopg_pool import AsyncConnectionPool

from accounts_service import db
from accounts_service.avatar import (
    AvatarInfo,
    AvatarLimits,
    AvatarRejected,
    inspect_avatar_off_loop,
)
from accounts_service.errors import InvalidArgument, Overloaded, Unavailable
from accounts_service.ratelimit import TokenBucket
from accounts_service.storage import Storage

UPLOAD_TTL = timedelta(hours=1)
_UPLOAD_KEY = re.compile(r"uploads/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
UPLOAD_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif", "image/avif"})
Avatar = bytes | str  # inline image bytes, or an upload key from CreateAvatarUpload


@dataclass(frozen=True)
class Upload:
    object: str
    url: str
    expire_time: datetime


class AvatarIntake:
    def __init__(
        self,
        pool: AsyncConnectionPool[db.Conn],
        storage: Storage,
        limits: AvatarLimits,
        uploads: TokenBucket,
    ) -> None:
        self._pool = pool
        self._storage = storage
        self._limits = limits
        self._uploads = uploads  # CreateAvatarUpload's rate: each one is a row and an object

    async def violations(self, avatar: Avatar | None) -> tuple[list[tuple[str, str]], str]:
        """What is wrong with a request's avatar that can be told without I/O (it is missing,
        or inline bytes fail the header check), with the failure code; ([], "") if nothing."""
        if avatar is None:
            return [("avatar_image", "is required (or set avatar_object)")], ""
        if isinstance(avatar, bytes):
            try:
                await self.check(avatar, "avatar_image")
            except InvalidArgument as exc:
                return exc.violations, exc.code
        return [], ""

    async def check(self, data: bytes, field: str) -> AvatarInfo:
        """Header only; InvalidArgument on `field` with the failure code."""
        try:
            return await inspect_avatar_off_loop(data, self._limits)
        except AvatarRejected as exc:
            raise InvalidArgument(field, exc.reason, exc.code) from exc

    async def store(self, source: bytes | db.UploadRow, key: str) -> str:
        """Checks the avatar (inline bytes, or an upload as `issued` returned it) and stores
        it at `key`; returns its content type. Storage only: call it with no database
        connection held. Claiming the upload is the caller's job, inside its transaction.
        """
        if isinstance(source, bytes):
            info = await self.check(source, "avatar_image")
            await self._storage.put_original(key, source, info.content_type)
            return info.content_type
        upload, avatar = source, source.object
        stat = await self._storage.stat(avatar)
        if stat is None:
            raise InvalidArgument("avatar_object", "the upload never arrived", "SOURCE_MISSING")
        if stat.size > self._limits.max_bytes:
            raise InvalidArgument(
                "avatar_object",
                f"is {stat.size} bytes, over the {self._limits.max_bytes} limit",
                "TOO_LARGE",
            )
        if stat.size != upload.content_length:
            raise InvalidArgument(
                "avatar_object",
                f"is {stat.size} bytes, not the {upload.content_length} declared for the upload",
            )
        # The whole object: WebP and AVIF openers read the full file, not just a header.
        data = await self._storage.read_head(avatar, stat.size)
        info = await self.check(data, "avatar_object")
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
        if wait := self._uploads.take():
            raise Overloaded(wait, "too many uploads requested, retry later")
        key = f"uploads/{uuid.uuid4()}"
        expire_time = datetime.now(UTC) + UPLOAD_TTL
        async with self._pool.connection() as conn, conn.transaction():
            await db.insert_upload(conn, key, content_type, content_length, expire_time)
            # An upload nobody adopts would stay forever; an adopted one is copied already.
            await db.schedule_cleanup(conn, [key], 2 * UPLOAD_TTL.total_seconds())
        url = self._storage.upload_url(key, UPLOAD_TTL, content_type, content_length)
        return Upload(object=key, url=url, expire_time=expire_time)

    async def discard(self, key: str) -> None:
        """Best effort: an orphaned object costs storage, not correctness."""
        with contextlib.suppress(Unavailable):
            await self._storage.delete(key)

    async def issued(self, conn: db.Conn, obj: str) -> db.UploadRow:
        """The upload row of `obj`, if CreateAvatarUpload issued it and no user used it yet;
        else InvalidArgument on avatar_object."""
        upload = await db.get_upload(conn, obj) if _UPLOAD_KEY.fullmatch(obj) else None
        if upload is None:
            raise InvalidArgument("avatar_object", "was not issued by CreateAvatarUpload")
        if upload.used_by is not None:
            raise InvalidArgument("avatar_object", "is already used by another user")
        return upload
