"""The object key layout of the bucket, shared by both services: the one place that knows where
each object lives (accounts checks that imaging reports thumbnails exactly where this says).

    avatars/<user>/<generation>/original            the stored original of one avatar generation
    thumbnails/<user>/<generation>/<name>.png       its rendered thumbnails (imaging writes them)
    uploads/<uuid>                                  a presigned upload from CreateAvatarUpload

Thumbnail names and pixel sizes are `SIZES`; a new generation never reuses another's keys, so
every object is immutable once written.
"""

from __future__ import annotations

import re
import uuid

SIZES = {"small": 100, "medium": 200, "large": 400}  # thumbnail name -> width and height
_UPLOAD_KEY = re.compile(r"uploads/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def original_key(user_id: uuid.UUID, generation: int) -> str:
    return f"{original_prefix(user_id, generation)}original"


def original_prefix(user_id: uuid.UUID, generation: int) -> str:
    """Where one generation's original is stored (and nothing else)."""
    return f"avatars/{user_id}/{generation}/"


def thumbnail_key(user_id: uuid.UUID | str, generation: int, name: str) -> str:
    return f"thumbnails/{user_id}/{generation}/{name}.png"


def generation_prefixes(user_id: uuid.UUID, generation: int) -> list[str]:
    """Every object of one avatar generation: its original and its thumbnails."""
    return [original_prefix(user_id, generation), f"thumbnails/{user_id}/{generation}/"]


def user_prefixes(user_id: uuid.UUID) -> list[str]:
    """Every object of a user: each generation's original and thumbnails."""
    return [f"avatars/{user_id}/", f"thumbnails/{user_id}/"]


def new_upload_key() -> str:
    return f"uploads/{uuid.uuid4()}"


def is_upload_key(key: str) -> bool:
    """Whether `key` has the shape of a key `new_upload_key` makes (not that it was issued)."""
    return _UPLOAD_KEY.fullmatch(key) is not None
