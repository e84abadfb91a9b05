"""Tools for fault tests: pausing the worker, reading its job log, talking to JetStream."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import nats
from accounts.v1 import events_pb2
from nats.js.api import ConsumerInfo

from devstack.net import wait_until
from tests.e2e.conftest import Service

SUBJECT = "accounts.thumbnail.requested"


def consumer_info(nats_url: str) -> ConsumerInfo:
    async def fetch() -> ConsumerInfo:
        nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            return await nc.jetstream().consumer_info("ACCOUNTS", "imaging")
        finally:
            await nc.close()

    return asyncio.run(fetch())


@contextmanager
def worker_paused(imaging: Service, nats_url: str) -> Iterator[None]:
    """SIGSTOPs the worker with no pull request left open, so new messages wait in the stream."""
    pid = imaging.process.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: consumer_info(nats_url).num_waiting == 0, 30, "open pulls expiring")
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def jobs(imaging: Service, user_id: str) -> list[dict[str, Any]]:
    """The worker's "job finished" log lines for one user, oldest first."""
    lines = []
    for line in imaging.process.log_text().splitlines():
        if '"job finished"' in line and user_id in line:
            entry = json.loads(line)
            if entry.get("user_id") == user_id:
                lines.append(entry)
    return lines


def event(user_id: str, generation: int, event_id: str | None = None) -> bytes:
    return events_pb2.ThumbnailRequested(
        event_id=event_id or str(uuid.uuid4()),
        user_id=user_id,
        avatar_object=f"avatars/{user_id}/{generation}/original",
        avatar_generation=generation,
    ).SerializeToString()


def publish(nats_url: str, payload: bytes) -> None:
    """Publishes a request as the outbox relay would, with a message id of its own."""

    async def send() -> None:
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().publish(
                SUBJECT, payload, headers={"Nats-Msg-Id": str(uuid.uuid4())}
            )
        finally:
            await nc.close()

    asyncio.run(send())


def hold_back(nats_url: str, user_id: str, generation: int) -> None:
    """Deletes the user's queued request for that generation from the stream, unprocessed."""

    async def delete() -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        try:
            state = (await js.stream_info("ACCOUNTS")).state
            for seq in range(state.first_seq, state.last_seq + 1):
                try:
                    msg = await js.get_msg("ACCOUNTS", seq)
                except nats.js.errors.NotFoundError:
                    continue
                request = events_pb2.ThumbnailRequested.FromString(msg.data or b"")
                if (request.user_id, request.avatar_generation) == (user_id, generation):
                    await js.delete_msg("ACCOUNTS", seq)
                    return
            raise AssertionError(f"no queued request for {user_id} generation {generation}")
        finally:
            await nc.close()

    asyncio.run(delete())
