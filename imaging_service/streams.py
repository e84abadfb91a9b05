"""The ACCOUNTS stream, the dead-letter stream and the durable consumer "imaging": what they
are (QueueConfig) and ``ensure``, which creates or updates them. Imaging is the only service
that does; accounts only publishes."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import nats.errors
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

# JetStream's "stream name already in use with a different configuration"; the same
# configuration would have succeeded.
_STREAM_NAME_IN_USE = 10058
LEADER_WAIT_SECONDS = 10.0
_NO_LEADER = (
    nats.js.errors.ServiceUnavailableError,
    nats.errors.NoRespondersError,
    nats.errors.TimeoutError,
)


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
    dlq_stream: str = "ACCOUNTS_DLQ"
    dlq_subject: str = "dlq.accounts.thumbnail.requested"
    dlq_max_age: float = 30 * 24 * 3600
    # Replays go back on the queue under this subject, which the consumer also takes, so that
    # the imaging NATS user needs no right to publish thumbnail requests; "": under `subject`.
    replay_subject: str = ""
    replicas: int = 1  # of both streams; the consumer has as many as its stream
    auth: NatsAuth = field(default_factory=NatsAuth)


async def ensure(js: JetStreamContext, config: QueueConfig) -> None:
    """Creates or updates the streams and the durable consumer to match ``config``.

    Several replicas may run it at the same moment: creating a stream that exists with the same
    configuration, or the consumer with the same configuration, succeeds on the server; a
    stream created meanwhile with another configuration is read back and updated instead."""
    await _ensure_stream(js, config, _accounts_stream(config))
    await _ensure_stream(js, config, _dlq_stream(config))
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
    await _consumer_led(js, config)


async def _consumer_led(js: JetStreamContext, config: QueueConfig) -> None:
    """Returns once the consumer answers. A consumer just created on a cluster has no leader
    for a moment, and pulls meanwhile fail with 503; that is start-up, not an outage, so it is
    waited out here (quietly, up to LEADER_WAIT_SECONDS) before anyone fetches."""
    deadline = time.monotonic() + LEADER_WAIT_SECONDS
    while True:
        try:
            info = await js.consumer_info(config.stream, config.durable, timeout=2)
            if info.cluster is None or info.cluster.leader:
                return
        except _NO_LEADER:
            if time.monotonic() >= deadline:
                raise
        if time.monotonic() >= deadline:
            raise nats.js.errors.ServiceUnavailableError(description="consumer has no leader")
        await asyncio.sleep(0.1)  # polling the server with a deadline


def _filter(config: QueueConfig) -> dict[str, Any]:
    if config.replay_subject in ("", config.subject):
        return {"filter_subject": config.subject}
    return {"filter_subjects": [config.subject, config.replay_subject]}


def _accounts_stream(config: QueueConfig) -> StreamConfig:
    return StreamConfig(
        name=config.stream,
        subjects=list(config.stream_subjects),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=config.max_age,
        duplicate_window=config.duplicate_window,
        num_replicas=config.replicas,
    )


def _dlq_stream(config: QueueConfig) -> StreamConfig:
    """Requests that gave up, kept apart so nothing consumes them until an operator replays
    them."""
    return StreamConfig(
        name=config.dlq_stream,
        subjects=[config.dlq_subject],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=config.dlq_max_age,
        duplicate_window=config.duplicate_window,
        num_replicas=config.replicas,
    )


async def _ensure_stream(js: JetStreamContext, config: QueueConfig, new: StreamConfig) -> None:
    """Imaging alone creates the streams: accounts only publishes, and its outbox keeps each
    event until the stream takes it. An existing stream (an operator's, or an older imaging's)
    keeps its retention and limits and only gains our subjects, a long enough duplicate window
    and at least ``config.replicas`` replicas."""
    assert new.name is not None
    try:
        current = (await js.stream_info(new.name)).config
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(new)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != _STREAM_NAME_IN_USE:
                raise
            current = (await js.stream_info(new.name)).config  # another replica's
        else:
            log.info("stream ready", extra={"stream": new.name, "replicas": new.num_replicas})
            return
    subjects = list(current.subjects or [])
    wanted = current.evolve(
        subjects=subjects + [s for s in new.subjects or [] if s not in subjects],
        duplicate_window=max(current.duplicate_window or 0, config.duplicate_window),
        num_replicas=max(current.num_replicas or 1, config.replicas),
    )
    if wanted != current:
        await js.update_stream(wanted)
        log.info("stream updated", extra={"stream": new.name, "replicas": wanted.num_replicas})
