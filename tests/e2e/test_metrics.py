"""Both /metrics endpoints, scraped before and after a real pipeline run: the counters moved."""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from accounts.v1 import accounts_pb2
from google.protobuf import empty_pb2
from prometheus_client.parser import text_string_to_metric_families

from devstack.net import wait_until
from tests.e2e.conftest import Service
from tests.e2e.support import FAILED, READY, create_user, image_bytes, wait_settled

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
STAGES = ("queue_wait", "fetch", "render", "upload", "callback")
DEADLINE = 30.0


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def present(samples: Samples, name: str) -> bool:
    return any(n == name for n, _ in samples)


class Scraper:
    """Scrapes one endpoint now and later; `moved` is the change of a sum in between."""

    def __init__(self, service: Service) -> None:
        assert service.metrics_url, f"{service.name} runs without a metrics port"
        self.url = service.metrics_url
        self.before = scrape(self.url)
        self.after = self.before

    def again(self) -> Samples:
        self.after = scrape(self.url)
        return self.after

    def moved(self, name: str, **labels: str) -> float:
        return total(self.after, name, **labels) - total(self.before, name, **labels)


def wait_moved(scraper: Scraper, what: str, check: Callable[[Scraper], bool]) -> None:
    """Scrapes until `check` holds (the worker counts a job only after its ack)."""

    def holds() -> bool:
        scraper.again()
        return check(scraper)

    wait_until(holds, DEADLINE, what)


def rpc(method: str, code: str, **labels: str) -> dict[str, Any]:
    return {"grpc_method": method, "grpc_code": code, **labels}


@pytest.mark.timeout(180)
def test_counters_move_during_a_pipeline_run(
    pipeline: tuple[Service, Service], accounts_stub: Any, imaging_stub: Any
) -> None:
    accounts_service, imaging_service = pipeline
    accounts = Scraper(accounts_service)
    imaging = Scraper(imaging_service)

    good = create_user(accounts_stub, image_bytes("photo_grace_hopper_baseline_q88.jpg"))
    broken = create_user(accounts_stub, image_bytes("bad_truncated_50pct.jpg"))
    assert wait_settled(accounts_stub, good.id).thumbnail_status == READY
    assert wait_settled(accounts_stub, broken.id).thumbnail_status == FAILED
    with pytest.raises(grpc.RpcError) as missing:
        accounts_stub.GetUser(accounts_pb2.GetUserRequest(id=str(uuid.uuid4())), timeout=5)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    watch = accounts_stub.WatchUser(accounts_pb2.WatchUserRequest(id=good.id), timeout=30)
    assert next(watch).thumbnail_status == READY
    watch.cancel()
    imaging_stub.GetQueueStats(empty_pb2.Empty(), timeout=5)

    wait_moved(
        accounts,
        "WatchUser counted as CANCELLED",
        lambda s: s.moved("grpc_server_handled_total", **rpc("WatchUser", "CANCELLED")) >= 1,
    )
    # Other tests' leftovers (reconciled users, late retries) may add calls: at least, not exactly.
    a = accounts
    handled = "grpc_server_handled_total"
    assert a.moved(handled, **rpc("CreateUser", "OK", grpc_type="unary")) == 2
    assert a.moved(handled, **rpc("GetUser", "OK")) >= 2  # the test's polls and the worker's
    assert a.moved(handled, **rpc("GetUser", "NOT_FOUND")) >= 1
    assert a.moved(handled, **rpc("UpdateThumbnails", "OK")) >= 2
    assert a.moved(handled, grpc_method="WatchUser", grpc_type="server_stream") >= 1
    assert a.moved("grpc_server_started_total", grpc_method="CreateUser") == 2
    assert a.moved("grpc_server_handling_seconds_count", grpc_method="CreateUser") == 2
    assert a.moved("accounts_outbox_published_total") >= 2
    assert a.moved("accounts_outbox_publish_lag_seconds_count") >= 2
    assert a.moved("accounts_time_to_thumbnail_seconds_count", status="READY") >= 1
    assert a.moved("accounts_time_to_thumbnail_seconds_count", status="FAILED") >= 1
    assert total(a.after, "accounts_time_to_thumbnail_seconds_sum") > 0
    assert present(a.after, "accounts_outbox_unpublished_events")
    assert present(a.after, "process_start_time_seconds")

    wait_moved(
        imaging,
        "both jobs counted by the worker",
        lambda s: (
            s.moved("imaging_jobs_processed_total", result="rendered") >= 1
            and s.moved("imaging_jobs_failed_total", reason="TRUNCATED") >= 1
        ),
    )
    i = imaging
    for stage in STAGES:
        assert i.moved("imaging_job_stage_seconds_count", stage=stage) >= 1, stage
    assert i.moved("imaging_render_seconds_count") >= 1
    assert i.moved("imaging_render_seconds_count", source_megapixels="0-0.5") >= 1
    assert i.moved(handled, **rpc("GetQueueStats", "OK")) == 1
    for gauge in (
        "imaging_queue_pending_messages",
        "imaging_queue_ack_pending_messages",
        "imaging_dead_letter_messages",
        "imaging_render_megapixels_in_flight",
        "imaging_render_process_replacements_total",
        "imaging_dead_letters_total",
        "process_start_time_seconds",
    ):
        assert present(i.after, gauge), gauge
