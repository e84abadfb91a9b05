"""Helpers for end-to-end tests: creating users, waiting for states, checking PNGs."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import nats
import psycopg
from accounts.v1 import accounts_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from minio import Minio
from PIL import Image

from devstack.net import wait_until
from tests.corpus import read

PENDING = accounts_pb2.THUMBNAIL_STATUS_PENDING
READY = accounts_pb2.THUMBNAIL_STATUS_READY
FAILED = accounts_pb2.THUMBNAIL_STATUS_FAILED
SIZES = {"small": 100, "medium": 200, "large": 400}


def image_bytes(name: str) -> bytes:
    return read(name)


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


def create_user(stub: Any, image: bytes, **fields: Any) -> Any:
    request = accounts_pb2.CreateUserRequest(
        email=fields.pop("email", unique_email()),
        display_name=fields.pop("display_name", "Test User"),
        avatar_image=image,
        **fields,
    )
    return stub.CreateUser(request, timeout=30)


def wait_settled(stub: Any, user_id: str, timeout: float = 60.0) -> Any:
    """The user once it is no longer PENDING; TimeoutError otherwise."""
    latest: list[Any] = []

    def settled() -> bool:
        latest[:] = [stub.GetUser(accounts_pb2.GetUserRequest(id=user_id), timeout=5)]
        return bool(latest[0].thumbnail_status != PENDING)

    wait_until(settled, timeout, f"user {user_id} leaving PENDING")
    return latest[0]


def png_image(data: bytes, size: int) -> Image.Image:
    """Asserts PNG, RGBA, size x size; transparent corners and an opaque centre."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    assert image.mode == "RGBA"
    assert image.size == (size, size)
    alpha = image.getchannel("A")
    for corner in [(0, 0), (size - 1, 0), (0, size - 1), (size - 1, size - 1)]:
        assert alpha.getpixel(corner) == 0, f"corner {corner} not transparent"
    return image


def bad_fields(err: grpc.RpcError) -> list[str]:
    """The fields named by the google.rpc.BadRequest of an error."""
    status = rpc_status.from_call(err)
    assert status is not None, "no rich error details"
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details), "no BadRequest detail"
    return [v.field for v in bad.field_violations]


def error_reason(err: grpc.RpcError) -> str:
    """The google.rpc.ErrorInfo reason (a failure code) of an error, or ""."""
    status = rpc_status.from_call(err)
    info = error_details_pb2.ErrorInfo()
    return next((info.reason for d in (status.details if status else []) if d.Unpack(info)), "")


def query(database_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def object_keys(client: Minio, bucket: str, prefix: str) -> list[str]:
    return [str(o.object_name) for o in client.list_objects(bucket, prefix=prefix, recursive=True)]


def user_keys(client: Minio, bucket: str, user_id: str) -> list[str]:
    """Every object of a user: originals and thumbnails of all generations."""
    return object_keys(client, bucket, f"avatars/{user_id}/") + object_keys(
        client, bucket, f"thumbnails/{user_id}/"
    )


def log_records(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of a service log (other lines skipped)."""
    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def matching(records: list[dict[str, Any]], **fields: Any) -> list[dict[str, Any]]:
    return [r for r in records if all(r.get(k) == v for k, v in fields.items())]


def consumer_info(nats_url: str, stream: str = "ACCOUNTS", durable: str = "imaging") -> Any:
    """The imaging consumer's state (nats.js.api.ConsumerInfo)."""

    async def fetch() -> Any:
        nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            return await nc.jetstream().consumer_info(stream, durable)
        finally:
            await nc.close()

    return asyncio.run(fetch())


@contextmanager
def beside(run: Callable[[threading.Event], None], join_seconds: float = 10.0) -> Iterator[None]:
    """Runs `run(stop)` in a thread while inside (a probe beside a burst); on the way out sets
    `stop` and waits for the thread."""
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(join_seconds)
