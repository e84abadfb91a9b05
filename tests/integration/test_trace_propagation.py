"""The trace context of the request that wrote an outbox row, through the relay, the NATS headers
and JetStream, into the worker's CONSUMER span (real PostgreSQL and nats-server, no mocks)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import nats
import pytest
from accounts.v1.events_pb2 import ThumbnailRequested
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from accounts_service.adapters import db
from accounts_service.adapters.bus import Bus
from accounts_service.background.relay import OutboxRelay
from accounts_service.events import request_thumbnails
from devstack.nats import NatsServer
from imaging_service.bus import QueueConfig
from imaging_service.consumer import Consumer, RetryPolicy
from imaging_service.handler import Outcome, Result
from tests.integration.test_imaging_bus import eventually, running, unique_config

Tracing = tuple[trace.Tracer, InMemorySpanExporter]


@pytest.fixture
def tracing() -> Iterator[Tracing]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield provider.get_tracer("test"), spans
    provider.shutdown()


class Worker:
    """A consumer whose handler notes the span it runs in."""

    def __init__(self, tracer: trace.Tracer | None) -> None:
        self.contexts: list[trace.SpanContext] = []
        self.consumer = Consumer(
            self.handle, self.give_up, RetryPolicy(3, 0.1, 1.0), slots=1, ack_wait=30.0,
            tracer=tracer,
        )  # fmt: skip

    async def handle(self, event: ThumbnailRequested) -> Result:
        self.contexts.append(trace.get_current_span().get_span_context())
        return Result(Outcome.DONE, reason="rendered")

    async def give_up(self, event: ThumbnailRequested, reason: str) -> None:
        raise AssertionError(f"gave up: {reason}")


async def add_user(pool: db.Pool, subject: str) -> None:
    """A user and its event, the way CreateUser writes them, on the test's own subject."""
    async with pool.connection() as conn, conn.transaction():
        user = await db.insert_user(
            conn, user_id=uuid.uuid4(), email=f"{uuid.uuid4().hex}@example.com",
            display_name="T", avatar_object="avatars/x/1/original",
            avatar_content_type="image/png", request_id=None, request_hash=None,
        )  # fmt: skip
        await request_thumbnails(conn, user)
        await conn.execute("UPDATE outbox SET subject = %s WHERE user_id = %s", (subject, user.id))


async def relay_and_run(
    pool: db.Pool,
    dsn: str,
    config: QueueConfig,
    worker: Worker,
    tracer: trace.Tracer | None,
) -> str:
    """Relays the outbox and lets the worker take the event; returns the message's traceparent."""
    async with running(worker.consumer, config):
        bus = Bus(config.url)
        try:
            relay = OutboxRelay(pool, bus, dsn, poll_seconds=30, tracer=tracer)
            assert await relay.publish_pending() == 1
        finally:
            await bus.close()
        await eventually(lambda: bool(worker.contexts), "the worker ran the job")
    nc = await nats.connect(config.url)
    try:
        message = await nc.jetstream().get_msg(config.stream, 1)
    finally:
        await nc.close()
    return (message.headers or {}).get("traceparent", "")


def only(spans: tuple[ReadableSpan, ...], kind: trace.SpanKind) -> ReadableSpan:
    matching = [s for s in spans if s.kind == kind]
    assert len(matching) == 1, [s.name for s in spans]
    return matching[0]


async def test_one_trace_from_the_request_through_nats_into_the_worker_span(
    pool: db.Pool, dsn: str, nats_server: NatsServer, tracing: Tracing
) -> None:
    tracer, spans = tracing
    config = unique_config(nats_server.url)
    worker = Worker(tracer)
    with tracer.start_as_current_span("CreateUser", kind=trace.SpanKind.SERVER) as request:
        await add_user(pool, config.subject)
    traceparent = await relay_and_run(pool, dsn, config, worker, tracer)

    finished = spans.get_finished_spans()
    producer = only(finished, trace.SpanKind.PRODUCER)
    consumer = only(finished, trace.SpanKind.CONSUMER)
    trace_id = request.get_span_context().trace_id
    assert producer.name == f"{config.subject} publish"
    assert producer.parent is not None
    assert producer.parent.span_id == request.get_span_context().span_id
    assert producer.context is not None
    assert traceparent.startswith(f"00-{trace_id:032x}-{producer.context.span_id:016x}-")
    assert consumer.name == f"{config.subject} process"
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert consumer.context is not None and consumer.context.trace_id == trace_id
    assert consumer.attributes is not None and consumer.attributes["messaging.delivery_count"] == 1
    assert worker.contexts == [consumer.context]  # the job ran inside the consumer span


async def test_with_tracing_off_nothing_is_stored_sent_or_started(
    pool: db.Pool, dsn: str, nats_server: NatsServer
) -> None:
    config = unique_config(nats_server.url)
    worker = Worker(None)
    await add_user(pool, config.subject)
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT traceparent FROM outbox")
        assert await cur.fetchall() == [(None,)]
    assert await relay_and_run(pool, dsn, config, worker, None) == ""
    assert worker.contexts == [trace.INVALID_SPAN_CONTEXT]
