"""Avatar intake: header checks, storing originals (guarded against orphans), and the uploads
issued by CreateAvatarUpload."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from accounts_service.adapters import db
from accounts_service.adapters.storage import ObjectHead, Storage
from accounts_service.errors import InvalidArgument, ObjectMissing, Overloaded, Unavailable
from accounts_service.ratelimit import TokenBucket
from image_policy.formats import ImageInfo, ImageRejected, probe_head, probe_off_loop
from image_policy.prescan import ScanLimits
from object_keys import is_upload_key, new_upload_key, original_prefix

UPLOAD_TTL = timedelta(hours=1)
# An original is stored before the transaction that adopts it commits; the removal queued
# beforehand (taken back by that commit) clears it after this long if the commit never comes.
ORPHAN_GRACE_SECONDS = 3600.0
UPLOAD_TYPES = frozenset(
    {"image/jpeg", "image/png", "image/webp", "image/gif", "image/avif", "image/heic", "image/heif"}
)
# An upload's check reads this much of it first: the whole header of nearly every JPEG, PNG
# and GIF (probe_head says what else needs the whole object, which is then read).
HEAD_BYTES = 64 * 1024
Avatar = bytes | str  # inline image bytes, or an upload key from CreateAvatarUpload


@dataclass(frozen=True)
class Upload:
    object: str
    url: str
    expire_time: datetime


@dataclass(frozen=True)
class Inline:
    """Inline avatar bytes that passed the header check."""

    data: bytes
    content_type: str


@dataclass(frozen=True)
class Checked:
    """A request's avatar after the checks that need no I/O: what is wrong with it (with the
    failure code), or else the avatar to store, inline bytes or an upload key."""

    avatar: Inline | str | None
    violations: list[tuple[str, str]] = field(default_factory=list)
    code: str = ""


class AvatarIntake:
    def __init__(
        self,
        pool: db.Pool,
        storage: Storage,
        limits: ScanLimits,
        uploads: TokenBucket,
    ) -> None:
        self._pool = pool
        self._storage = storage
        self._limits = limits
        self._uploads = uploads  # CreateAvatarUpload's rate: each one is a row and an object

    async def checked(self, avatar: Avatar | None) -> Checked:
        """The checks that need no I/O: the avatar is there, and inline bytes pass the header
        check (once per request: an update that has to move to another generation reuses it)."""
        if avatar is None:
            return Checked(None, [("avatar_image", "is required (or set avatar_object)")])
        if isinstance(avatar, str):
            return Checked(avatar)
        try:
            info = await self.check(avatar, "avatar_image")
        except InvalidArgument as exc:
            return Checked(None, exc.violations, exc.code)
        return Checked(Inline(avatar, info.content_type))

    async def check(self, data: bytes, field: str) -> ImageInfo:
        """The header check of a whole avatar (its pre-scan walks all of it: an avatar held in
        memory is refused at once for what the renderer would refuse it for); InvalidArgument
        on `field` with the failure code."""
        try:
            return await probe_off_loop(data, self._limits)
        except ImageRejected as exc:
            raise InvalidArgument(field, exc.reason, exc.code) from exc

    async def source(self, conn: db.Conn, avatar: Inline | str) -> Inline | db.UploadRow:
        """Inline bytes as they are; an upload key as its row, if it may be used."""
        return avatar if isinstance(avatar, Inline) else await self.issued(conn, avatar)

    async def guard(self, conn: db.Conn, user_id: uuid.UUID, generation: int) -> list[int]:
        """Queues the removal of the original about to be stored (in `ORPHAN_GRACE_SECONDS`),
        so a crash before the commit leaves no orphan; the commit calls `take_back`."""
        return await db.guard_prefixes(
            conn, [original_prefix(user_id, generation)], ORPHAN_GRACE_SECONDS
        )

    @staticmethod
    async def take_back(conn: db.Conn, guard: list[int]) -> None:
        """Takes back the removal `guard` queued; if the cleaner has come for it already (a
        call that took about an hour), the original may be gone: no commit."""
        if not await db.release_guard(conn, guard):
            raise Unavailable("the call took too long and its upload was removed; retry")

    async def store(self, source: Inline | db.UploadRow, key: str) -> str:
        """Stores the avatar (checked inline bytes, or an upload as `source` returned it, which
        is checked here) at `key`; returns its content type. Storage only: call it with no
        database connection held. Claiming the upload is the caller's job, inside its
        transaction. If the call is cancelled meanwhile, the write (in a thread, it cannot be
        interrupted) is awaited and removed again.
        """
        task = asyncio.ensure_future(self._store(source, key))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            await asyncio.wait([task])
            await self.discard(key)
            raise

    async def _store(self, source: Inline | db.UploadRow, key: str) -> str:
        if isinstance(source, Inline):
            await self._storage.put_original(key, source.data, source.content_type)
            return source.content_type
        upload, avatar = source, source.object
        try:
            head = await self._storage.read_head(avatar, HEAD_BYTES)
        except ObjectMissing as exc:
            raise InvalidArgument(
                "avatar_object", "the upload never arrived", "SOURCE_MISSING"
            ) from exc
        if head.size > self._limits.max_bytes:
            raise InvalidArgument(
                "avatar_object",
                f"is {head.size} bytes, over the {self._limits.max_bytes} limit",
                "TOO_LARGE",
            )
        if head.size != upload.content_length:
            raise InvalidArgument(
                "avatar_object",
                f"is {head.size} bytes, not the {upload.content_length} declared for the upload",
            )
        try:
            info = await self._check_upload(avatar, head)
            await self._storage.copy(avatar, key, info.content_type)
        except ObjectMissing as exc:  # removed since the first read
            raise InvalidArgument("avatar_object", "the upload is gone", "SOURCE_MISSING") from exc
        return info.content_type

    async def _check_upload(self, avatar: str, head: ObjectHead) -> ImageInfo:
        """The header check from the upload's head where it suffices, else from all of it
        (WebP, AVIF and HEIF, a header past the head, and every refusal). What a head that
        passes cannot show (JPEG scans, frames, chunks after the first image data) the
        renderer's pre-scan of the whole file refuses: the user ends FAILED, TOO_COMPLEX."""
        try:
            info = await asyncio.to_thread(probe_head, head.data, head.size, self._limits)
        except ImageRejected as exc:
            raise InvalidArgument("avatar_object", exc.reason, exc.code) from exc
        if info is not None:
            return info
        whole = await self._storage.read_head(avatar, head.size)
        return await self.check(whole.data, "avatar_object")

    async def issue_upload(self, content_type: str, content_length: int) -> Upload:
        """A presigned PUT under uploads/; only keys issued here are accepted later."""
        violations = []
        if content_type not in UPLOAD_TYPES:
            violations.append(
                ("content_type", "must be image/jpeg, png, webp, gif, avif, heic or heif")
            )
        if not 0 < content_length <= self._limits.max_bytes:
            violations.append(
                ("content_length", f"must be between 1 and {self._limits.max_bytes} bytes")
            )
        if violations:
            raise InvalidArgument.many(violations)
        if wait := self._uploads.take():
            raise Overloaded(wait, "too many uploads requested, retry later")
        key = new_upload_key()
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
        upload = await db.get_upload(conn, obj) if is_upload_key(obj) else None
        if upload is None:
            raise InvalidArgument("avatar_object", "was not issued by CreateAvatarUpload")
        if upload.used_by is not None:
            raise InvalidArgument("avatar_object", "is already used by another user")
        return upload
