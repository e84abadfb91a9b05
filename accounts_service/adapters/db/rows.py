"""The rows the database adapter returns: plain frozen dataclasses, no library types."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class UserRow:
    id: uuid.UUID
    email: str
    display_name: str
    avatar_object: str
    avatar_content_type: str
    avatar_generation: int
    thumbnail_status: str
    thumbnails: dict[str, Any] | None
    failure_code: str
    failure_reason: str
    # Not compared either: pruning old request ids changes nothing a client sees.
    request_id: str | None = field(compare=False)
    request_hash: str | None = field(compare=False)
    create_time: datetime
    update_time: datetime
    # When thumbnails were last requested. Not part of the user's state: WatchUser compares
    # rows, and a re-request alone must not repeat an unchanged state.
    requested_at: datetime = field(compare=False)


@dataclass(frozen=True)
class OutboxRow:
    event_id: uuid.UUID
    subject: str
    payload: bytes
    traceparent: str | None
    created_at: datetime


@dataclass(frozen=True)
class UploadRow:
    object: str
    content_type: str
    content_length: int
    expire_time: datetime
    used_by: uuid.UUID | None


@dataclass(frozen=True)
class CleanupRow:
    id: int
    prefix: str
    attempts: int


USER_COLUMNS = (
    "id, email, display_name, avatar_object, avatar_content_type, avatar_generation, "
    "thumbnail_status, thumbnails, failure_code, failure_reason, request_id, request_hash, "
    "create_time, update_time, requested_at"
)
