"""Every failure class of DESIGN.md's "Failure semantics", on the real pipeline."""

from __future__ import annotations

import os
import signal
import time

import psycopg
from accounts.v1 import accounts_pb2
from google.protobuf import empty_pb2
from imaging.v1 import imaging_pb2
from minio import Minio

from devstack.nats import NatsServer
from devstack.net import wait_until
from devstack.s3 import S3Server
from tests.e2e.conftest import Service
from tests.e2e.faults import consumer_info, event, hold_back, jobs, publish, worker_paused
from tests.e2e.support import FAILED, READY, SIZES, create_user, image_bytes, wait_settled

SLOW_IMAGE = "geom_exactly_50mp_10000x5000.png"  # seconds to render: time to act mid-job


def test_a_corrupt_image_fails_in_one_delivery(pipeline: tuple[Service, Service], accounts_stub):
    _, imaging = pipeline
    user = create_user(accounts_stub, image_bytes("bad_truncated_50pct.jpg"))
    final = wait_settled(accounts_stub, user.id)
    assert final.thumbnail_status == FAILED
    assert final.failure_code == "TRUNCATED" and final.failure_reason
    wait_until(lambda: jobs(imaging, user.id), 10, "the job's log line")
    assert [(j["attempt"], j["outcome"]) for j in jobs(imaging, user.id)] == [(1, "failed")]


def test_s3_down_during_a_job_is_retried_with_backoff_until_it_is_back(
    pipeline: tuple[Service, Service],
    accounts_stub,
    s3_server: S3Server,
    nats_server: NatsServer,
    service_env: dict[str, str],
) -> None:
    _, imaging = pipeline
    with worker_paused(imaging, nats_server.url):
        user = create_user(accounts_stub, image_bytes("photo_chelsea.png"))
        s3_server.stop()
    try:
        wait_until(lambda: jobs(imaging, user.id), 30, "a failed attempt")
    finally:
        s3_server.start()  # early: a slow start on a busy machine must not exhaust the retries
    final = wait_settled(accounts_stub, user.id, timeout=60)
    assert final.thumbnail_status == READY, final.failure_reason
    history = jobs(imaging, user.id)
    # If the outage outlasts RECONCILE_AFTER_SECONDS, the reconciler re-requests the user: a
    # second event whose deliveries count from 1 again. The back-off is the first event's.
    first = history[0]["event_id"]
    retries = [j for j in history if j["outcome"] == "retry" and j["event_id"] == first]
    assert [j["attempt"] for j in retries] == list(range(1, len(retries) + 1))
    assert all("unreachable" in j["detail"] or "S3" in j["detail"] for j in retries), retries
    base, cap = float(service_env["RETRY_BASE_SECONDS"]), float(service_env["RETRY_MAX_SECONDS"])
    for j in retries:  # exponential back-off with jitter in [0.5, 1], capped
        full = min(cap, base * 2 ** (j["attempt"] - 1))
        assert 0.5 * full - 0.01 <= j["retry_in_s"] <= full + 0.01, (j, full)
    assert history[-1]["outcome"] == "done"


def test_accounts_down_the_worker_keeps_the_job_until_it_returns(
    pipeline: tuple[Service, Service], accounts_stub, nats_server: NatsServer
) -> None:
    accounts, imaging = pipeline
    with worker_paused(imaging, nats_server.url):
        queued = consumer_info(nats_server.url).num_pending
        user = create_user(accounts_stub, image_bytes("photo_coffee_progressive_q80.jpg"))
        # The relay hands the event to JetStream first: stopping accounts before that would
        # leave it in the outbox, and this test is about the worker, not the relay.
        wait_until(
            lambda: consumer_info(nats_server.url).num_pending > queued, 30, "the event queued"
        )
        accounts.process.terminate(30)
    try:
        wait_until(lambda: len(jobs(imaging, user.id)) >= 3, 60, "three attempts without accounts")
        assert all(j["outcome"] == "retry" for j in jobs(imaging, user.id))
    finally:
        accounts.start()
    final = wait_settled(accounts_stub, user.id, timeout=60)
    assert final.thumbnail_status == READY, final.failure_reason


def test_s3_down_past_every_retry_fails_dead_letters_and_replays(
    pipeline: tuple[Service, Service],
    accounts_stub,
    imaging_stub,
    s3_server: S3Server,
    nats_server: NatsServer,
    internal_token: str,
) -> None:
    _, imaging = pipeline
    before = imaging_stub.GetQueueStats(empty_pb2.Empty(), timeout=10).dead_lettered
    with worker_paused(imaging, nats_server.url):
        user = create_user(accounts_stub, image_bytes("photo_chelsea.png"))
        s3_server.stop()
    try:
        failed = wait_settled(accounts_stub, user.id, timeout=90)
        assert failed.thumbnail_status == FAILED
        assert failed.failure_code == "GAVE_UP"
        assert failed.failure_reason.startswith("gave up after 6 attempts: ")
        wait_until(
            lambda: (
                imaging_stub.GetQueueStats(empty_pb2.Empty(), timeout=10).dead_lettered > before
            ),
            30,
            "a dead-letter copy",
        )
    finally:
        s3_server.start()
    replayed = imaging_stub.ReplayDeadLetters(
        imaging_pb2.ReplayDeadLettersRequest(),
        metadata=(("authorization", f"Bearer {internal_token}"),),
        timeout=30,
    )
    assert replayed.replayed >= 1
    assert imaging_stub.GetQueueStats(empty_pb2.Empty(), timeout=10).dead_lettered == 0
    final = wait_settled_status(accounts_stub, user.id, READY)
    assert final.failure_code == ""


def test_sigterm_during_a_render_exits_in_the_grace_period_and_the_job_completes(
    pipeline: tuple[Service, Service], accounts_stub, nats_server: NatsServer, service_env
) -> None:
    _, imaging = pipeline
    user = create_user(accounts_stub, image_bytes(SLOW_IMAGE))
    wait_until(lambda: consumer_info(nats_server.url).num_ack_pending >= 1, 30, "job in hand")
    pid = imaging.process.pid
    assert pid is not None
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    grace = float(service_env["SHUTDOWN_GRACE_SECONDS"])
    wait_until(lambda: not imaging.process.running, grace + 5, "the worker exiting")
    assert time.monotonic() - started < grace + 2
    assert imaging.process.returncode == 0
    imaging.start()
    assert wait_settled(accounts_stub, user.id, timeout=90).thumbnail_status == READY


def test_duplicate_and_stale_events_change_nothing(
    pipeline: tuple[Service, Service], accounts_stub, nats_server: NatsServer, s3_server, s3_bucket
) -> None:
    _, imaging = pipeline
    with worker_paused(imaging, nats_server.url):
        user = create_user(accounts_stub, image_bytes("photo_chelsea.png"))
        publish(nats_server.url, event(user.id, 1))  # the same request, delivered again
    first = wait_settled(accounts_stub, user.id)
    assert first.thumbnail_status == READY
    wait_until(lambda: len(jobs(imaging, user.id)) >= 2, 30, "both deliveries handled")
    handled = len(jobs(imaging, user.id))
    publish(nats_server.url, event(user.id, 1))  # and once more after READY
    wait_until(lambda: len(jobs(imaging, user.id)) > handled, 30, "the late duplicate handled")
    assert jobs(imaging, user.id)[-1]["detail"].startswith("skipped"), "rendered again"

    accounts_stub.UpdateAvatar(
        accounts_pb2.UpdateAvatarRequest(id=user.id, avatar_image=image_bytes("geom_64x64.png"))
    )
    second = wait_settled(accounts_stub, user.id)
    wait_until(lambda: any(j["generation"] == 2 for j in jobs(imaging, user.id)), 30, "gen 2 job")
    handled = len(jobs(imaging, user.id))
    publish(nats_server.url, event(user.id, 1))  # stale: generation 1 < 2
    wait_until(lambda: len(jobs(imaging, user.id)) > handled, 30, "the stale event handled")
    assert jobs(imaging, user.id)[-1]["outcome"] == "done"
    assert jobs(imaging, user.id)[-1]["detail"].startswith("skipped")
    final = accounts_stub.GetUser(accounts_pb2.GetUserRequest(id=user.id))
    assert final.avatar.generation == 2
    assert_thumbnails(final, second, s3_server.client(), s3_bucket)


def test_generation_2_delivered_before_generation_1_ends_on_generation_2(
    pipeline: tuple[Service, Service], accounts_stub, nats_server: NatsServer, s3_server, s3_bucket
) -> None:
    _, imaging = pipeline
    with worker_paused(imaging, nats_server.url):
        user = create_user(accounts_stub, image_bytes("photo_chelsea.png"))
        accounts_stub.UpdateAvatar(
            accounts_pb2.UpdateAvatarRequest(id=user.id, avatar_image=image_bytes("geom_64x64.png"))
        )
        wait_until(lambda: consumer_info(nats_server.url).num_pending >= 2, 30, "both queued")
        hold_back(nats_server.url, user.id, generation=1)
    done = wait_settled(accounts_stub, user.id)
    assert (done.thumbnail_status, done.avatar.generation) == (READY, 2)
    publish(nats_server.url, event(user.id, 1))  # generation 1 arrives last
    wait_until(lambda: any(j["generation"] == 1 for j in jobs(imaging, user.id)), 30, "gen 1")
    final = accounts_stub.GetUser(accounts_pb2.GetUserRequest(id=user.id))
    assert final.thumbnails.large.object == f"thumbnails/{user.id}/2/large.png"
    assert_thumbnails(final, done, s3_server.client(), s3_bucket)


def test_a_lost_event_is_reconciled(
    pipeline: tuple[Service, Service], accounts_stub, nats_server: NatsServer, database_url: str
) -> None:
    nats_server.stop()
    try:
        user = create_user(accounts_stub, image_bytes("photo_chelsea.png"))
        with psycopg.connect(database_url, autocommit=True) as conn:
            deleted = conn.execute("DELETE FROM outbox WHERE user_id = %s", (user.id,)).rowcount
        assert deleted == 1
    finally:
        nats_server.start()
    assert wait_settled(accounts_stub, user.id, timeout=60).thumbnail_status == READY


def wait_settled_status(stub, user_id: str, status: int, timeout: float = 60):
    latest = []

    def reached() -> bool:
        latest[:] = [stub.GetUser(accounts_pb2.GetUserRequest(id=user_id), timeout=5)]
        return bool(latest[0].thumbnail_status == status)

    wait_until(reached, timeout, f"user {user_id} reaching {status}")
    return latest[0]


def assert_thumbnails(user, expected, client: Minio, bucket: str) -> None:
    for name in SIZES:
        got, want = getattr(user.thumbnails, name), getattr(expected.thumbnails, name)
        assert (got.object, got.size_bytes) == (want.object, want.size_bytes)
        assert client.stat_object(bucket, got.object).size == got.size_bytes
