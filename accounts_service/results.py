"""Render results reported by the imaging service, checked before they touch a user."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from accounts_service.errors import InvalidArgument
from accounts_service.validation import has_control

SIZES = {"small": 100, "medium": 200, "large": 400}
FAILURE_CODES = frozenset(
    {"EMPTY", "NOT_AN_IMAGE", "TRUNCATED", "UNSUPPORTED_FORMAT", "TOO_MANY_PIXELS", "TOO_LARGE",
     "TOO_COMPLEX", "SOURCE_MISSING", "GAVE_UP"}
)  # fmt: skip


def original_key(user_id: uuid.UUID, generation: int) -> str:
    return f"avatars/{user_id}/{generation}/original"


def thumbnail_key(user_id: uuid.UUID, generation: int, name: str) -> str:
    return f"thumbnails/{user_id}/{generation}/{name}.png"


@dataclass(frozen=True)
class RenderedThumbnail:
    name: str  # small | medium | large
    object: str
    width: int
    height: int
    size_bytes: int


def checked_failure(code: str, reason: str) -> tuple[str, str]:
    if code not in FAILURE_CODES:
        raise InvalidArgument("failure.code", f"must be one of {', '.join(sorted(FAILURE_CODES))}")
    if has_control(reason):  # PostgreSQL refuses NUL; clients show the reason as it is
        raise InvalidArgument("failure.reason", "must not contain control characters")
    return code, reason[:1000] or code


def thumbnails_json(
    user_id: uuid.UUID, generation: int, thumbnails: list[RenderedThumbnail]
) -> dict[str, Any]:
    """Exactly our three sizes at the keys we expect: a caller never picks storage keys."""
    by_name = {t.name: t for t in thumbnails}
    if set(by_name) != set(SIZES) or len(thumbnails) != len(SIZES):
        raise InvalidArgument("thumbnails", "must contain small, medium and large")
    stored: dict[str, Any] = {}
    for name, size in SIZES.items():
        t = by_name[name]
        expected = thumbnail_key(user_id, generation, name)
        if t.object != expected:
            raise InvalidArgument(f"thumbnails.{name}.object", f"must be {expected}")
        if (t.width, t.height) != (size, size) or t.size_bytes <= 0:
            raise InvalidArgument(f"thumbnails.{name}", f"must be {size}x{size} with a size")
        stored[name] = {"object": expected, "width": size, "height": size,
                        "size_bytes": t.size_bytes}  # fmt: skip
    return stored
