"""Render results reported by the imaging service (UpdateThumbnails): checked, then recorded."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from accounts_service.adapters import db
from accounts_service.errors import InvalidArgument
from accounts_service.validation import has_control
from object_keys import SIZES, thumbnail_key

FAILURE_CODES = frozenset(
    {"EMPTY", "NOT_AN_IMAGE", "TRUNCATED", "UNSUPPORTED_FORMAT", "TOO_MANY_PIXELS", "TOO_LARGE",
     "TOO_COMPLEX", "SOURCE_MISSING", "GAVE_UP"}
)  # fmt: skip


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


async def record(
    conn: db.Conn,
    user_id: uuid.UUID,
    generation: int,
    thumbnails: list[RenderedThumbnail] | None,
    failure: tuple[str, str] | None,
) -> db.UserRow | None:
    """READY with the thumbnails, or FAILED with the failure (never over READY), if `generation`
    is still the user's; None, and nothing changed, otherwise (or if there is no such user)."""
    if thumbnails is not None:
        stored = thumbnails_json(user_id, generation, thumbnails)
        return await db.set_thumbnails(conn, user_id, generation, stored)
    if failure is not None:
        code, reason = checked_failure(*failure)
        return await db.set_failure(conn, user_id, generation, code, reason)
    raise InvalidArgument("thumbnails", "a result (thumbnails or failure) is required")
