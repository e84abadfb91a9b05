"""Use cases of the accounts service: each one a short function over db, storage and events.

A use case holds at most one pool connection at a time and none across a call to S3: it reads
(and queues the removal of what it is about to store) in one short block, stores the original
with no connection held, then commits in one short transaction.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from accounts_service import results, validation
from accounts_service.adapters import db
from accounts_service.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from accounts_service.events import request_thumbnails
from accounts_service.intake import Avatar, AvatarIntake, Inline, Upload
from accounts_service.metrics import Metrics
from accounts_service.results import RenderedThumbnail
from object_keys import generation_prefixes, original_key, user_prefixes

log = logging.getLogger(__name__)
# A job already running when its user is deleted may still write thumbnails (it takes them
# back once accounts answers NOT_FOUND); a second sweep catches what a crash left behind.
LATE_SWEEP_SECONDS = 600.0
# UpdateAvatar calls on one user that commit out of order: the later commit moves its original
# to a fresh generation and tries again, this many times at most.
MAX_GENERATION_RACES = 8


class Users:
    def __init__(
        self,
        pool: db.Pool,
        intake: AvatarIntake,
        page_key: bytes,
        wake_cleaner: Callable[[], None],
        old_generation_grace_seconds: float,
        metrics: Metrics | None = None,
    ) -> None:
        self._pool = pool
        self._metrics = metrics or Metrics()
        self._intake = intake
        self._page_key = page_key
        self._wake_cleaner = wake_cleaner  # a deleted user's objects are due at once
        self._grace = old_generation_grace_seconds

    async def create(
        self, email: str, display_name: str, avatar: Avatar | None, request_id: str
    ) -> db.UserRow:
        """A PENDING user and its ThumbnailRequested event, committed together.

        A repeat of `request_id` with the same body returns the user as it is now and
        publishes nothing; with a different body it is INVALID_ARGUMENT on request_id.
        """
        violations = validation.new_user_violations(email, display_name, request_id)
        checked = await self._intake.checked(avatar)
        violations += checked.violations
        if violations or checked.avatar is None:
            raise InvalidArgument.many(violations, checked.code)
        chosen = checked.avatar
        # Hashing a 4 MB avatar costs ~2 ms: only a request_id ever needs the fingerprint.
        fingerprint = (
            validation.request_fingerprint(email, display_name, _identity(chosen))
            if request_id
            else ""
        )
        user_id = uuid.uuid4()
        key = original_key(user_id, 1)
        async with self._pool.connection() as conn:
            if request_id and (earlier := await self._replay(conn, request_id, fingerprint)):
                return earlier
            if await db.email_taken(conn, email):
                if request_id and (earlier := await self._replay(conn, request_id, fingerprint)):
                    return earlier  # a concurrent retry of this request won meanwhile
                raise AlreadyExists(f"email {email!r} is already taken")
            source = await self._intake.source(conn, chosen)
            guard = await self._intake.guard(conn, user_id, 1)
        content_type = await self._intake.store(source, key)
        try:
            user = await self._insert(
                user_id, email, display_name, key, content_type, chosen, request_id, fingerprint,
                guard,
            )  # fmt: skip
        except AlreadyExists:
            # A concurrent retry of the same request_id may have won (its email is ours too).
            await self._intake.discard(key)
            if request_id:
                async with self._pool.connection() as conn:
                    earlier = await self._replay(conn, request_id, fingerprint)
                if earlier:
                    return earlier
            raise
        except BaseException:
            await self._intake.discard(key)
            raise
        if isinstance(chosen, str):
            await self._intake.discard(chosen)
        return user

    async def _insert(
        self,
        user_id: uuid.UUID,
        email: str,
        display_name: str,
        key: str,
        content_type: str,
        avatar: Inline | str,
        request_id: str,
        fingerprint: str,
        guard: list[int],
    ) -> db.UserRow:
        async with self._pool.connection() as conn, conn.transaction():
            if isinstance(avatar, str) and not await db.claim_upload(conn, avatar, user_id):
                raise InvalidArgument("avatar_object", "is already used by another user")
            user = await db.insert_user(
                conn,
                user_id=user_id,
                email=email,
                display_name=display_name,
                avatar_object=key,
                avatar_content_type=content_type,
                request_id=request_id or None,
                request_hash=fingerprint if request_id else None,
            )
            await self._intake.take_back(conn, guard)
            event_id = await request_thumbnails(conn, user)
        log.info("user created", extra={"user_id": str(user_id), "event_id": str(event_id)})
        return user

    async def _replay(self, conn: db.Conn, request_id: str, fingerprint: str) -> db.UserRow | None:
        user = await db.get_user_by_request_id(conn, request_id)
        if user is not None and user.request_hash != fingerprint:
            raise InvalidArgument("request_id", "was already used for a different request")
        return user

    async def get(self, user_id: str) -> db.UserRow:
        uid = validation.parse_id(user_id)
        async with self._pool.connection() as conn:
            user = await db.get_user(conn, uid)
        if user is None:
            raise NotFound(f"user {uid} not found")
        return user

    async def list_page(self, page_size: int, page_token: str) -> tuple[list[db.UserRow], str]:
        size = validation.page_size(page_size)
        after = validation.decode_page_token(self._page_key, page_token) if page_token else None
        async with self._pool.connection() as conn:
            rows = await db.list_users(conn, after, size + 1)
        if len(rows) <= size:
            return rows, ""
        last = rows[size - 1]
        return rows[:size], validation.encode_page_token(self._page_key, last.create_time, last.id)

    async def update_avatar(self, user_id: str, avatar: Avatar | None) -> db.UserRow:
        """A new generation, PENDING, and a new event; results for older generations lose.

        The previous generation's objects are removed after the grace period (caches may
        still serve them until then). Concurrent updates of one user each get a generation
        of their own; the one that commits last is the user's avatar.
        """
        checked = await self._intake.checked(avatar)
        violations = checked.violations
        try:
            uid = validation.parse_id(user_id)
        except InvalidArgument as exc:
            violations = exc.violations + violations
        if violations or checked.avatar is None:
            raise InvalidArgument.many(violations, checked.code)
        chosen = checked.avatar
        generation, guard, source = await self._reserve(uid, chosen)
        key = original_key(uid, generation)
        content_type = await self._intake.store(source, key)
        try:
            for _ in range(MAX_GENERATION_RACES):
                if done := await self._adopt(uid, generation, key, content_type, chosen, guard):
                    break
                # A concurrent update committed a later generation first: ours goes on top.
                await self._intake.discard(key)
                generation, guard, source = await self._reserve(uid, chosen)
                key = original_key(uid, generation)
                content_type = await self._intake.store(source, key)
            else:
                raise Unavailable(f"too many concurrent avatar updates of user {uid}; retry")
        except BaseException:
            await self._intake.discard(key)
            raise
        user, event_id = done
        if isinstance(chosen, str):
            await self._intake.discard(chosen)
        log.info(
            "avatar updated",
            extra={
                "user_id": str(uid),
                "event_id": str(event_id),
                "generation": user.avatar_generation,
            },
        )
        return user

    async def _reserve(
        self, uid: uuid.UUID, avatar: Inline | str
    ) -> tuple[int, list[int], Inline | db.UploadRow]:
        """A generation of this call's own, the guard on its original, and what to store."""
        async with self._pool.connection() as conn:
            generation = await db.reserve_generation(conn, uid)
            if generation is None:
                raise NotFound(f"user {uid} not found")
            source = await self._intake.source(conn, avatar)
            guard = await self._intake.guard(conn, uid, generation)
        return generation, guard, source

    async def _adopt(
        self,
        uid: uuid.UUID,
        generation: int,
        key: str,
        content_type: str,
        avatar: Inline | str,
        guard: list[int],
    ) -> tuple[db.UserRow, uuid.UUID] | None:
        """Makes the stored original the user's avatar, with its event; None (and nothing
        changed) if a later generation was committed meanwhile."""
        async with self._pool.connection() as conn, conn.transaction():
            current = await db.get_user(conn, uid, for_update=True)
            if current is None:
                raise NotFound(f"user {uid} not found")
            if current.avatar_generation >= generation:
                return None
            if isinstance(avatar, str) and not await db.claim_upload(conn, avatar, uid):
                raise InvalidArgument("avatar_object", "is already used by another user")
            await self._intake.take_back(conn, guard)
            user = await db.set_avatar(conn, uid, generation, key, content_type)
            assert user is not None
            old = generation_prefixes(uid, current.avatar_generation)
            await db.schedule_cleanup(conn, old, self._grace)
            event_id = await request_thumbnails(conn, user)
        return user, event_id

    async def regenerate(self, user_id: str) -> db.UserRow:
        """PENDING again and a new event for the current generation, in any state."""
        uid = validation.parse_id(user_id)
        async with self._pool.connection() as conn, conn.transaction():
            user = await db.set_pending(conn, uid)
            if user is None:
                raise NotFound(f"user {uid} not found")
            event_id = await request_thumbnails(conn, user)
        log.info("thumbnails re-requested", extra={"user_id": str(uid), "event_id": str(event_id)})
        return user

    async def update_thumbnails(
        self,
        user_id: str,
        generation: int,
        thumbnails: list[RenderedThumbnail] | None,
        failure: tuple[str, str] | None,
    ) -> db.UserRow:
        """Records a render result; one for another generation leaves the user as it is."""
        uid = validation.parse_id(user_id, "user_id")
        async with self._pool.connection() as conn, conn.transaction():
            user = await results.record(conn, uid, generation, thumbnails, failure)
            if user is None:
                current = await db.get_user(conn, uid)
                if current is None:
                    raise NotFound(f"user {uid} not found")
                log.info(
                    "render result ignored",
                    extra={"user_id": str(uid), "generation": generation,
                           "current": current.avatar_generation},
                )  # fmt: skip
                return current
        waited = (user.update_time - user.requested_at).total_seconds()  # both PostgreSQL's clock
        self._metrics.time_to_thumbnail.labels(user.thumbnail_status).observe(max(waited, 0.0))
        log.info(
            "thumbnails recorded",
            extra={"user_id": str(uid), "generation": generation, "status": user.thumbnail_status},
        )
        return user

    async def delete(self, user_id: str) -> None:
        """The row goes at once; its objects (every generation) within one cleanup interval.

        NOT_FOUND if there is no such user (a second delete). Events still in the outbox go
        too; one already queued finds the user gone and changes nothing.
        """
        uid = validation.parse_id(user_id)
        async with self._pool.connection() as conn, conn.transaction():
            if not await db.delete_user(conn, uid):
                raise NotFound(f"user {uid} not found")
            await db.schedule_cleanup(conn, user_prefixes(uid), 0.0)
            await db.schedule_cleanup(conn, user_prefixes(uid), LATE_SWEEP_SECONDS)
        self._wake_cleaner()
        log.info("user deleted", extra={"user_id": str(uid)})

    async def create_upload(self, content_type: str, content_length: int) -> Upload:
        return await self._intake.issue_upload(content_type, content_length)


def _identity(avatar: Inline | str) -> bytes | str:
    """What identifies an avatar in a request fingerprint: its bytes, or the upload key."""
    return avatar.data if isinstance(avatar, Inline) else avatar
