"""The imaging Handler on its own: real S3, real render processes, and accounts as a small real
gRPC server that records what it is told. No NATS, no consumer: one job, start to finish."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from accounts.v1 import accounts_pb2, accounts_pb2_grpc
from accounts.v1.events_pb2 import ThumbnailRequested
from PIL import Image

from devstack.net import free_port
from devstack.s3 import S3Server
from imaging_service.accounts_client import AccountsClient
from imaging_service.decision import Outcome, Result
from imaging_service.handler import Handler
from imaging_service.pool import RenderPool
from imaging_service.render import Limits
from imaging_service.storage import Storage
from tests.corpus import read

PHOTO = "photo_china_original.jpg"
TOKEN = "test-internal-token"


@dataclass
class FakeAccounts(accounts_pb2_grpc.AccountsServiceServicer):
    """A real gRPC AccountsService that knows one user at ``generation`` and records reports."""

    generation: int = 1
    status: int = accounts_pb2.THUMBNAIL_STATUS_PENDING
    reports: list[accounts_pb2.UpdateThumbnailsRequest] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)

    async def GetUser(
        self, request: accounts_pb2.GetUserRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> accounts_pb2.User:
        self.tokens.append(dict(context.invocation_metadata() or ()).get("authorization", ""))
        return accounts_pb2.User(
            id=request.id,
            avatar=accounts_pb2.Avatar(generation=self.generation),
            thumbnail_status=self.status,  # type: ignore[arg-type]
        )

    async def UpdateThumbnails(
        self,
        request: accounts_pb2.UpdateThumbnailsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> accounts_pb2.User:
        self.reports.append(request)
        return accounts_pb2.User(id=request.user_id)


@dataclass
class Setting:
    handler: Handler
    accounts: FakeAccounts
    client: AccountsClient
    s3: S3Server
    bucket: str


@pytest.fixture
async def pool() -> AsyncIterator[RenderPool]:
    rendering = RenderPool(1, Limits())
    yield rendering
    await rendering.close()


@pytest.fixture
async def setting(s3_server: S3Server, s3_bucket: str, pool: RenderPool) -> AsyncIterator[Setting]:
    accounts = FakeAccounts()
    server = grpc.aio.server()
    accounts_pb2_grpc.add_AccountsServiceServicer_to_server(accounts, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    storage = storage_at(s3_server.endpoint, s3_server, s3_bucket)
    try:
        async with AccountsClient(f"127.0.0.1:{port}", TOKEN, timeout=5.0) as client:
            handler = Handler(storage, pool, client, Limits())
            yield Setting(handler, accounts, client, s3_server, s3_bucket)
    finally:
        await server.stop(None)


def storage_at(endpoint: str, s3: S3Server, bucket: str) -> Storage:
    return Storage.connect(endpoint, s3.access_key, s3.secret_key, bucket, False, "us-east-1")


def put(s3: S3Server, bucket: str, key: str, data: bytes) -> None:
    s3.client().put_object(bucket, key, io.BytesIO(data), len(data))


def request(s3: S3Server, bucket: str, data: bytes, generation: int = 1) -> ThumbnailRequested:
    user_id = str(uuid.uuid4())
    key = f"avatars/{user_id}/{generation}/original"
    put(s3, bucket, key, data)
    return ThumbnailRequested(
        event_id=str(uuid.uuid4()),
        user_id=user_id,
        avatar_object=key,
        avatar_generation=generation,
    )


async def test_a_job_writes_three_pngs_and_reports_them(setting: Setting) -> None:
    event = request(setting.s3, setting.bucket, read(PHOTO))

    result = await setting.handler.handle(event)

    assert result == Result(Outcome.DONE, reason="rendered")
    assert setting.accounts.tokens == [f"Bearer {TOKEN}"]
    [report] = setting.accounts.reports
    assert (report.user_id, report.avatar_generation) == (event.user_id, 1)
    assert report.WhichOneof("result") == "thumbnails"
    for name, size in (("small", 100), ("medium", 200), ("large", 400)):
        thumbnail = getattr(report.thumbnails, name)
        assert thumbnail.object == f"thumbnails/{event.user_id}/1/{name}.png"
        assert (thumbnail.width, thumbnail.height) == (size, size)
        stored = setting.s3.client().get_object(setting.bucket, thumbnail.object).read()
        assert len(stored) == thumbnail.size_bytes
        with Image.open(io.BytesIO(stored)) as image:
            assert (image.format, image.size) == ("PNG", (size, size))


async def test_a_corrupt_image_is_reported_failed_with_its_code(setting: Setting) -> None:
    whole = read(PHOTO)
    event = request(setting.s3, setting.bucket, whole[: len(whole) // 3])

    result = await setting.handler.handle(event)

    assert (result.outcome, result.reason) == (Outcome.FAILED, "TRUNCATED")
    [report] = setting.accounts.reports
    assert report.WhichOneof("result") == "failure"
    assert report.failure.code == "TRUNCATED" and report.failure.reason
    written = setting.s3.client().list_objects(setting.bucket, f"thumbnails/{event.user_id}/")
    assert list(written) == []


async def test_a_stale_generation_is_skipped_without_rendering(setting: Setting) -> None:
    setting.accounts.generation = 2
    event = request(setting.s3, setting.bucket, read(PHOTO), generation=1)

    result = await setting.handler.handle(event)

    assert (result.outcome, result.reason) == (Outcome.DONE, "skipped")
    assert setting.accounts.reports == []
    written = setting.s3.client().list_objects(setting.bucket, f"thumbnails/{event.user_id}/")
    assert list(written) == []


async def test_storage_down_is_a_retry_and_nothing_is_reported(
    setting: Setting, pool: RenderPool
) -> None:
    event = request(setting.s3, setting.bucket, read(PHOTO))
    down = storage_at(f"127.0.0.1:{free_port()}", setting.s3, setting.bucket)  # nothing there

    result = await Handler(down, pool, setting.client, Limits()).handle(event)

    assert (result.outcome, result.reason) == (Outcome.RETRY, "StorageUnavailable")
    assert setting.accounts.reports == []


class ReadBackCounted(Storage):
    """The real S3; ``etags_prove`` False plays a store whose ETags are not MD5s (AWS with
    SSE-KMS), and ``size_read_back`` one that stored something else. Counts the reads back."""

    etags_prove = True
    size_read_back: int | None = None

    def __init__(self, client: Any, bucket: str) -> None:
        super().__init__(client, bucket)
        self.read_back: list[str] = []

    async def put_thumbnail(self, key: str, png: bytes) -> bool:
        return await super().put_thumbnail(key, png) and self.etags_prove

    async def stat(self, key: str) -> tuple[int, str]:
        self.read_back.append(key)
        size, content_type = await super().stat(key)
        return (size if self.size_read_back is None else self.size_read_back), content_type


def counted(setting: Setting) -> ReadBackCounted:
    s3 = setting.s3
    return ReadBackCounted.connect(
        s3.endpoint, s3.access_key, s3.secret_key, setting.bucket, False, "us-east-1"
    )


async def test_the_put_answers_prove_the_thumbnails_so_none_is_read_back(
    setting: Setting, pool: RenderPool
) -> None:
    storage = counted(setting)
    event = request(setting.s3, setting.bucket, read(PHOTO))

    result = await Handler(storage, pool, setting.client, Limits()).handle(event)

    assert result == Result(Outcome.DONE, reason="rendered")
    assert storage.read_back == []
    assert len(setting.accounts.reports) == 1


async def test_thumbnails_are_read_back_where_the_etags_prove_nothing(
    setting: Setting, pool: RenderPool
) -> None:
    storage = counted(setting)
    storage.etags_prove = False
    event = request(setting.s3, setting.bucket, read(PHOTO))

    result = await Handler(storage, pool, setting.client, Limits()).handle(event)

    assert result == Result(Outcome.DONE, reason="rendered")
    assert sorted(storage.read_back) == [
        f"thumbnails/{event.user_id}/1/{name}.png" for name in ("large", "medium", "small")
    ]
    assert len(setting.accounts.reports) == 1


async def test_a_thumbnail_read_back_wrong_is_a_retry_and_nothing_is_reported(
    setting: Setting, pool: RenderPool
) -> None:
    storage = counted(setting)
    storage.etags_prove, storage.size_read_back = False, 1
    event = request(setting.s3, setting.bucket, read(PHOTO))

    result = await Handler(storage, pool, setting.client, Limits()).handle(event)

    assert (result.outcome, result.reason) == (Outcome.RETRY, "StorageUnavailable")
    assert setting.accounts.reports == []
