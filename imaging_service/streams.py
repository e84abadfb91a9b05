"""The ACCOUNTS stream, the dead-letter stream and the durable consumer "imaging": what they
are (QueueConfig) and ``ensure``, which creates or updates them. Imaging is the only service
that does; accounts only publishes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from credentials.nats_auth import NatsAuth

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueConfig:
    """Durations in seconds. ``max_deliver`` on the server is unlimited on purpose: the worker
    counts attempts itself (decision.py) so that a failed GAVE_UP report can still be retried."""

    url: str
    stream: str
    stream_subjects: tuple[str, ...]
    subject: str
    durable: str
    ack_wait: float
    max_ack_pending: int
    duplicate_window: float = 20 * 60
    max_age: float = 7 * 24 * 3600
    # Requests that gave up, kept apart so nothing consumes them until an operator replays them.
    dlq_stream: str = "ACCOUNTS_DLQ"
    dlq_subject: str = "dlq.accounts.thumbnail.requested"
    dlq_max_age: float = 30 * 24 * 3600
    # Replays go back on the queue under this subject, which the consumer also takes, so that
    # the imaging NATS user needs no right to publish thumbnail requests; "": under `subject`.
    replay_subject: str = ""
    auth: NatsAuth = field(default_factory=NatsAuth)


async def ensure(js: JetStreamContext, config: QueueConfig) -> None:
    """Creates or updates the streams and the durable consumer to match ``config``."""
    await _ensure_stream(js, config)
    await _ensure_dlq(js, config)
    await js.add_consumer(  # create-or-update; pull_subscribe would ignore a changed config
        config.stream,
        ConsumerConfig(
            durable_name=config.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=config.ack_wait,
            max_deliver=-1,
            **_filter(config),
            max_ack_pending=config.max_ack_pending,
        ),
    )


def _filter(config: QueueConfig) -> dict[str, Any]:
    if config.replay_subject in ("", config.subject):
        return {"filter_subject": config.subject}
    return {"filter_subjects": [config.subject, config.replay_subject]}


async def _ensure_dlq(js: JetStreamContext, config: QueueConfig) -> None:
    try:
        await js.stream_info(config.dlq_stream)
    except nats.js.errors.NotFoundError:
        await js.add_stream(
            StreamConfig(
                name=config.dlq_stream,
                subjects=[config.dlq_subject],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                max_age=config.dlq_max_age,
                duplicate_window=config.duplicate_window,
            )
        )
        log.info("dead-letter stream created", extra={"stream": config.dlq_stream})


async def _ensure_stream(js: JetStreamContext, config: QueueConfig) -> None:
    """Imaging alone creates the stream: accounts only publishes to it, and its outbox keeps
    each event until the stream takes it. An existing stream (an operator's, or an older
    imaging's) keeps its retention and limits and only gains our subjects and a long enough
    duplicate window."""
    try:
        current = (await js.stream_info(config.stream)).config
    except nats.js.errors.NotFoundError:
        await js.add_stream(
            StreamConfig(
                name=config.stream,
                subjects=list(config.stream_subjects),
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                max_age=config.max_age,
                duplicate_window=config.duplicate_window,
            )
        )
        log.info("stream created", extra={"stream": config.stream})
        return
    subjects = list(current.subjects or [])
    wanted = current.evolve(
        subjects=subjects + [s for s in config.stream_subjects if s not in subjects],
        duplicate_window=max(current.duplicate_window or 0, config.duplicate_window),
    )
    if wanted != current:
        await js.update_stream(wanted)
        log.info("stream updated", extra={"stream": config.stream})
