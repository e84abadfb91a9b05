"""Imaging's queue as deployed (stream ACCOUNTS, durable "imaging"), for tests of NATS users."""

from __future__ import annotations

from credentials.nats_auth import NatsAuth
from imaging_service.bus import QueueConfig

SUBJECT = "accounts.thumbnail.requested"
REPLAY_SUBJECT = "accounts.thumbnail.replayed"


def deployed_queue(url: str, auth: NatsAuth) -> QueueConfig:
    """The stream, subjects and durable of imaging's default settings, logged in with `auth`."""
    return QueueConfig(
        url=url,
        stream="ACCOUNTS",
        stream_subjects=("accounts.>",),
        subject=SUBJECT,
        durable="imaging",
        ack_wait=30.0,
        max_ack_pending=8,
        replay_subject=REPLAY_SUBJECT,
        auth=auth,
    )
