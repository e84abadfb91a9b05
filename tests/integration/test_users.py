"""The `Users` use cases against real PostgreSQL and S3, with no gRPC in between."""

from __future__ import annotations

import asyncio
import io
import uuid
from dataclasses import dataclass

import pytest
from accounts.v1 import events_pb2
from minio import Minio
from PIL import Image

from accounts_service.adapters import db
from accounts_service.adapters.storage import IMMUTABLE, ObjectHead, Storage
from accounts_service.errors import AlreadyExists, InvalidArgument, NotFound, ObjectMissing
from accounts_service.intake import HEAD_BYTES, AvatarIntake
from accounts_service.metrics import Metrics
from accounts_service.ratelimit import TokenBucket
from accounts_service.results import RenderedThumbnail
from accounts_service.users import LATE_SWEEP_SECONDS, Users
from devstack.s3 import S3Server
from image_policy.prescan import ScanLimits
from object_keys import (
    SIZES,
    generation_prefixes,
    original_key,
    thumbnail_key,
    user_prefixes,
)
from tests.hostile import HOSTILE, MIB
from tests.integration.test_cleanup import keys, s3_settings

GRACE = 300.0  # old generations' objects stay this long after an update


def png(side: int = 32, color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), color).save(out, "PNG")
    return out.getvalue()


class ReadsNoted(Storage):
    """The real storage, noting how many bytes each read of an object asked for."""

    reads: list[int]

    async def read_head(self, key: str, length: int) -> ObjectHead:
        self.reads.append(length)
        return await super().read_head(key, length)


@dataclass
class World:
    users: Users
    pool: db.Pool
    s3: Minio
    bucket: str
    metrics: Metrics
    wakes: list[None]
    storage: ReadsNoted


@pytest.fixture
def world(pool: db.Pool, s3_server: S3Server, s3_bucket: str) -> World:
    storage = ReadsNoted(s3_settings(s3_server, s3_bucket))
    storage.reads = []
    intake = AvatarIntake(pool, storage, ScanLimits(), TokenBucket(rate=100.0, burst=100))
    metrics = Metrics()
    wakes: list[None] = []
    users = Users(pool, intake, b"k" * 32, lambda: wakes.append(None), GRACE, metrics)
    return World(users, pool, s3_server.client(), s3_bucket, metrics, wakes, storage)


def email() -> str:
    return f"u{uuid.uuid4().hex[:12]}@example.com"


async def rows(pool: db.Pool, sql: str, *params: object) -> list[tuple[object, ...]]:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()


async def events(pool: db.Pool, user_id: uuid.UUID) -> list[events_pb2.ThumbnailRequested]:
    found = await rows(
        pool, "SELECT payload FROM outbox WHERE user_id = %s ORDER BY created_at", user_id
    )
    return [events_pb2.ThumbnailRequested.FromString(bytes(p)) for (p,) in found]


async def cleanups(pool: db.Pool) -> list[tuple[object, ...]]:
    """Queued removals: (prefix, seconds until due, rounded to 10 s)."""
    return await rows(
        pool,
        "SELECT prefix, (round(extract(epoch FROM due_at - clock_timestamp()) / 10) * 10)::int"
        " FROM storage_cleanup ORDER BY id",
    )


def rendered(user_id: uuid.UUID, generation: int) -> list[RenderedThumbnail]:
    return [
        RenderedThumbnail(name, thumbnail_key(user_id, generation, name), size, size, 10)
        for name, size in SIZES.items()
    ]


async def test_create_stores_the_original_and_queues_one_event_in_the_same_commit(
    world: World,
) -> None:
    user = await world.users.create(email(), "Ada", png(), "")
    assert (user.thumbnail_status, user.avatar_generation) == ("PENDING", 1)
    assert user.avatar_object == original_key(user.id, 1)
    stat = world.s3.stat_object(world.bucket, user.avatar_object)
    assert (stat.content_type, stat.metadata["Cache-Control"]) == ("image/png", IMMUTABLE)
    [event] = await events(world.pool, user.id)
    assert (event.user_id, event.avatar_object, event.avatar_generation) == (
        str(user.id), user.avatar_object, 1,
    )  # fmt: skip
    assert await cleanups(world.pool) == []  # the guard on the original was taken back
    assert await world.users.get(str(user.id)) == user


async def test_a_repeated_request_id_returns_the_user_and_publishes_nothing(world: World) -> None:
    address, image = email(), png()
    first = await world.users.create(address, "Ada", image, "req-1")
    again = await world.users.create(address, "Ada", image, "req-1")
    assert again == first
    assert len(await events(world.pool, first.id)) == 1
    with pytest.raises(InvalidArgument) as refused:
        await world.users.create(address, "Someone else", image, "req-1")
    assert refused.value.violations[0][0] == "request_id"


async def test_concurrent_retries_of_one_request_make_one_user(world: World) -> None:
    address, image = email(), png()
    made = await asyncio.gather(
        *(world.users.create(address, "Ada", image, "req-race") for _ in range(4))
    )
    assert len({u.id for u in made}) == 1
    assert len(await events(world.pool, made[0].id)) == 1
    assert keys(world.s3, world.bucket, f"avatars/{made[0].id}/") == {made[0].avatar_object}


async def test_a_taken_email_is_already_exists_and_leaves_no_object(world: World) -> None:
    address = email()
    await world.users.create(address, "Ada", png(), "")
    with pytest.raises(AlreadyExists):
        await world.users.create(address.upper(), "Ada again", png(), "")
    count = await rows(world.pool, "SELECT count(*) FROM users WHERE lower(email) = %s", address)
    assert count == [(1,)]


async def test_an_avatar_that_is_not_an_image_is_invalid_and_nothing_is_written(
    world: World,
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await world.users.create(email(), "Ada", b"not an image at all", "")
    assert refused.value.violations[0][0] == "avatar_image"
    assert await rows(world.pool, "SELECT count(*) FROM users") == [(0,)]


async def test_create_from_an_upload_copies_it_and_uses_it_up(world: World) -> None:
    image = png()
    upload = await world.users.create_upload("image/png", len(image))
    world.s3.put_object(world.bucket, upload.object, io.BytesIO(image), len(image))
    user = await world.users.create(email(), "Ada", upload.object, "")
    stored = world.s3.get_object(world.bucket, user.avatar_object)
    try:
        assert stored.read() == image
    finally:
        stored.close()
        stored.release_conn()
    assert keys(world.s3, world.bucket, upload.object) == set()  # the upload itself is gone
    assert await rows(
        world.pool, "SELECT used_by FROM uploads WHERE object = %s", upload.object
    ) == [(user.id,)]
    with pytest.raises(InvalidArgument) as refused:
        await world.users.create(email(), "Bob", upload.object, "")
    assert refused.value.violations[0][0] == "avatar_object"


def noise(fmt: str, size: tuple[int, int] = (1200, 900)) -> bytes:
    out = io.BytesIO()
    Image.effect_noise(size, 64).convert("RGB").save(out, fmt, quality=90)
    return out.getvalue()


async def uploaded(world: World, data: bytes, content_type: str) -> str:
    upload = await world.users.create_upload(content_type, len(data))
    world.s3.put_object(world.bucket, upload.object, io.BytesIO(data), len(data))
    return upload.object


async def test_read_head_gives_the_first_bytes_and_the_size_of_all(world: World) -> None:
    for size in (0, 10, 3 * HEAD_BYTES):
        key = f"uploads/{uuid.uuid4()}"
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        world.s3.put_object(world.bucket, key, io.BytesIO(data), size)
        assert await world.storage.read_head(key, HEAD_BYTES) == ObjectHead(data[:HEAD_BYTES], size)
    with pytest.raises(ObjectMissing):
        await world.storage.read_head(f"uploads/{uuid.uuid4()}", HEAD_BYTES)


async def test_a_large_jpeg_upload_is_checked_from_its_head_alone(world: World) -> None:
    image = noise("JPEG")
    assert len(image) > 4 * HEAD_BYTES
    # Declared as a PNG: the original gets the type its bytes have, and the originals' caching.
    user = await world.users.create(email(), "Ada", await uploaded(world, image, "image/png"), "")
    assert (user.avatar_content_type, user.thumbnail_status) == ("image/jpeg", "PENDING")
    assert world.storage.reads == [HEAD_BYTES]
    stat = world.s3.stat_object(world.bucket, user.avatar_object)
    assert (stat.size, stat.content_type) == (len(image), "image/jpeg")
    assert stat.metadata["Cache-Control"] == IMMUTABLE


async def test_a_large_webp_upload_is_read_whole(world: World) -> None:
    """Pillow's WebP opener parses the whole container: the head cannot tell."""
    image = noise("WEBP")
    assert len(image) > HEAD_BYTES
    user = await world.users.create(email(), "Ada", await uploaded(world, image, "image/webp"), "")
    assert user.avatar_content_type == "image/webp"
    assert world.storage.reads == [HEAD_BYTES, len(image)]


async def test_an_upload_whose_head_is_refused_gets_the_whole_files_verdict(
    world: World,
) -> None:
    bomb = next(h for h in HOSTILE if h.name == "jpeg_progressive_bomb").build(MIB)
    with pytest.raises(InvalidArgument) as refused:
        await world.users.create(email(), "Ada", await uploaded(world, bomb, "image/jpeg"), "")
    assert (refused.value.code, refused.value.violations[0][0]) == ("TOO_COMPLEX", "avatar_object")
    assert world.storage.reads == [HEAD_BYTES, len(bomb)]
    assert await rows(world.pool, "SELECT count(*) FROM users") == [(0,)]


async def test_caps_past_the_head_of_an_upload_are_left_to_the_renderer(world: World) -> None:
    """Frames after the first are no header: CreateUser, which reads the head only, takes the
    upload; the renderer's whole-file pre-scan refuses it (FAILED, TOO_COMPLEX). Sent inline,
    the same bytes are refused at once."""
    frames = next(h for h in HOSTILE if h.name == "gif_many_frames").build(MIB)
    user = await world.users.create(email(), "Ada", await uploaded(world, frames, "image/gif"), "")
    assert user.thumbnail_status == "PENDING"
    assert world.storage.reads == [HEAD_BYTES]
    with pytest.raises(InvalidArgument) as refused:
        await world.users.create(email(), "Bob", frames, "")
    assert refused.value.code == "TOO_COMPLEX"


async def test_an_upload_that_never_arrived_is_source_missing(world: World) -> None:
    upload = await world.users.create_upload("image/png", 100)
    with pytest.raises(InvalidArgument) as refused:
        await world.users.create(email(), "Ada", upload.object, "")
    assert refused.value.code == "SOURCE_MISSING"
    assert await rows(world.pool, "SELECT count(*) FROM users") == [(0,)]


async def test_update_avatar_moves_to_a_new_generation_and_queues_the_old_one(
    world: World,
) -> None:
    user = await world.users.create(email(), "Ada", png(), "")
    updated = await world.users.update_avatar(str(user.id), png(color="blue"))
    assert (updated.avatar_generation, updated.thumbnail_status) == (2, "PENDING")
    assert updated.avatar_object == original_key(user.id, 2)
    assert [e.avatar_generation for e in await events(world.pool, user.id)] == [1, 2]
    assert await cleanups(world.pool) == [(p, GRACE) for p in generation_prefixes(user.id, 1)]


async def test_concurrent_avatar_updates_each_get_a_generation_and_the_last_commit_wins(
    world: World,
) -> None:
    user = await world.users.create(email(), "Ada", png(), "")
    colors = ["blue", "green", "yellow", "white", "black", "gray"]
    done = await asyncio.gather(
        *(world.users.update_avatar(str(user.id), png(color=c)) for c in colors)
    )
    generations = [u.avatar_generation for u in done]
    assert len(set(generations)) == len(colors)  # never two on the same keys
    now = await world.users.get(str(user.id))
    assert now.avatar_generation == max(generations)
    assert now.avatar_object == original_key(user.id, now.avatar_generation)
    world.s3.stat_object(world.bucket, now.avatar_object)  # raises if it is not there
    sent = [e.avatar_generation for e in await events(world.pool, user.id)]
    assert sent[0] == 1 and sorted(sent[1:]) == sorted(generations)
    # Every earlier generation is queued for removal, the current one's objects are not.
    queued = {str(prefix) for prefix, _ in await cleanups(world.pool)}
    assert queued >= {
        p for g in [1, *generations] if g != now.avatar_generation
        for p in generation_prefixes(user.id, g)
    }  # fmt: skip
    assert not any(now.avatar_object.startswith(p) for p in queued)


async def test_update_avatar_of_nobody_is_not_found_and_stores_nothing(world: World) -> None:
    nobody = uuid.uuid4()
    with pytest.raises(NotFound):
        await world.users.update_avatar(str(nobody), png())
    assert keys(world.s3, world.bucket, f"avatars/{nobody}/") == set()


async def test_regenerate_makes_a_failed_user_pending_with_a_new_event(world: World) -> None:
    user = await world.users.create(email(), "Ada", png(), "")
    failed = await world.users.update_thumbnails(
        str(user.id), 1, None, ("NOT_AN_IMAGE", "cannot decode")
    )
    assert (failed.thumbnail_status, failed.failure_code) == ("FAILED", "NOT_AN_IMAGE")
    again = await world.users.regenerate(str(user.id))
    assert (again.thumbnail_status, again.failure_code, again.avatar_generation) == (
        "PENDING", "", 1,
    )  # fmt: skip
    assert [e.avatar_generation for e in await events(world.pool, user.id)] == [1, 1]
    with pytest.raises(NotFound):
        await world.users.regenerate(str(uuid.uuid4()))


async def test_update_thumbnails_records_the_current_generation_only(world: World) -> None:
    user = await world.users.create(email(), "Ada", png(), "")
    await world.users.update_avatar(str(user.id), png(color="blue"))
    stale = await world.users.update_thumbnails(str(user.id), 1, rendered(user.id, 1), None)
    assert (stale.thumbnail_status, stale.avatar_generation) == ("PENDING", 2)
    ready = await world.users.update_thumbnails(str(user.id), 2, rendered(user.id, 2), None)
    assert ready.thumbnail_status == "READY"
    assert ready.thumbnails == {
        name: {"object": thumbnail_key(user.id, 2, name), "width": size, "height": size,
               "size_bytes": 10}
        for name, size in SIZES.items()
    }  # fmt: skip
    late_failure = await world.users.update_thumbnails(str(user.id), 2, None, ("GAVE_UP", "x"))
    assert late_failure == ready  # a failure never overwrites READY
    recorded = world.metrics.registry.get_sample_value(
        "accounts_time_to_thumbnail_seconds_count", {"status": "READY"}
    )
    assert recorded == 1.0


async def test_update_thumbnails_refuses_keys_it_did_not_choose(world: World) -> None:
    user = await world.users.create(email(), "Ada", png(), "")
    wrong = [
        RenderedThumbnail(t.name, f"elsewhere/{t.name}.png", t.width, t.height, t.size_bytes)
        for t in rendered(user.id, 1)
    ]
    with pytest.raises(InvalidArgument):
        await world.users.update_thumbnails(str(user.id), 1, wrong, None)
    with pytest.raises(InvalidArgument):
        await world.users.update_thumbnails(str(user.id), 1, None, ("NO_SUCH_CODE", "x"))
    with pytest.raises(NotFound):
        await world.users.update_thumbnails(str(uuid.uuid4()), 1, None, ("GAVE_UP", "x"))
    assert (await world.users.get(str(user.id))).thumbnail_status == "PENDING"


async def test_delete_removes_the_row_and_its_events_and_queues_every_object(
    world: World,
) -> None:
    user = await world.users.create(email(), "Ada", png(), "")
    await world.users.delete(str(user.id))
    with pytest.raises(NotFound):
        await world.users.get(str(user.id))
    assert await events(world.pool, user.id) == []
    assert await cleanups(world.pool) == [
        *((p, 0) for p in user_prefixes(user.id)),
        *((p, LATE_SWEEP_SECONDS) for p in user_prefixes(user.id)),
    ]
    assert world.wakes == [None]  # the cleaner was told at once
    with pytest.raises(NotFound):
        await world.users.delete(str(user.id))


async def test_list_pages_through_every_user_once(world: World) -> None:
    made = {(await world.users.create(email(), f"U{i}", png(), "")).id for i in range(5)}
    seen: list[uuid.UUID] = []
    token = ""
    while True:
        page, token = await world.users.list_page(2, token)
        seen += [u.id for u in page]
        if not token:
            break
    assert sorted(seen) == sorted(made)
