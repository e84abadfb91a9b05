"""Helpers for end-to-end tests: creating users, waiting for states, checking PNGs."""

from __future__ import annotations

import io
import uuid
from typing import Any

from accounts.v1 import accounts_pb2
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
