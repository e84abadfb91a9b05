"""NATS JetStream for the accounts service: publishing outbox events. Every nats error becomes
PublishFailed (one of our Unavailable errors) here."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import nats
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from accounts_service.errors import PublishFailed
from credentials.nats_auth import NatsAuth
from credentials.nats_connect import connect_options
from credentials.redact import redact_url

log = logging.getLogger(__name__)
# Replies (publish acks) come to inboxes under this prefix, the only subjects the accounts NATS
# user may subscribe to (deploy/k8s/overlays/dev/nats/authorization.conf).
INBOX_PREFIX = "_INBOX.accounts"


class Bus:
    """One NATS connection that reconnects forever; `publish` waits for the PubAck."""

    def __init__(
        self, url: str, publish_timeout: float = 2.0, auth: NatsAuth | None = None
    ) -> None:
        self._url = url
        self._auth = auth or NatsAuth()
        self._timeout = publish_timeout
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def connect(self) -> None:
        """Connects once; raises PublishFailed if NATS cannot be reached now."""
        if self._nc is not None:
            return
        try:
            nc = await nats.connect(
                **connect_options(self._url, self._auth, INBOX_PREFIX),
                name="accounts-outbox-relay",
                connect_timeout=2,
                reconnect_time_wait=1,
                max_reconnect_attempts=-1,
                allow_reconnect=True,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            where = redact_url(self._url)
            raise PublishFailed(f"NATS unreachable at {where}: {exc!r}") from exc
        self._nc, self._js = nc, nc.jetstream()
        log.info("nats connected", extra={"nats_url": redact_url(self._url)})

    async def publish(
        self, subject: str, payload: bytes, msg_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        """Publishes with Nats-Msg-Id = msg_id, so a repeat within the window is dropped;
        `headers` (e.g. traceparent) go along."""
        await self.connect()
        assert self._js is not None
        try:
            ack = await self._js.publish(
                subject,
                payload,
                timeout=self._timeout,
                headers={**(headers or {}), "Nats-Msg-Id": msg_id},
            )
        except nats.errors.NoRespondersError as exc:
            raise PublishFailed(f"no stream accepts {subject!r} yet") from exc
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            raise PublishFailed(f"publish failed: {exc!r}") from exc
        if ack.duplicate:
            log.info("event already in stream", extra={"event_id": msg_id, "seq": ack.seq})

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()
        self._nc = self._js = None

    async def _on_error(self, exc: Exception) -> None:
        log.warning("nats error", extra={"error": repr(exc)})

    async def _on_disconnected(self) -> None:
        log.warning("nats disconnected")

    async def _on_reconnected(self) -> None:
        log.info("nats reconnected")
