"""The ThumbnailRequested event, written to the outbox inside the caller's transaction."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from accounts.v1 import events_pb2

from accounts_service.adapters import db
from accounts_service.tracing import current_traceparent

SUBJECT = "accounts.thumbnail.requested"


async def request_thumbnails(conn: db.Conn, user: db.UserRow) -> uuid.UUID:
    """Adds a ThumbnailRequested for the user's current generation; returns its event id.

    The current span's traceparent goes with it, so the trace continues in the worker."""
    event_id = uuid.uuid4()
    event = events_pb2.ThumbnailRequested(
        event_id=str(event_id),
        user_id=str(user.id),
        avatar_object=user.avatar_object,
        avatar_generation=user.avatar_generation,
    )
    event.requested_time.FromDatetime(datetime.now(UTC))
    await db.insert_event(
        conn, event_id, SUBJECT, event.SerializeToString(), user.id, current_traceparent()
    )
    return event_id
