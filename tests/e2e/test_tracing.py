"""With OTEL_EXPORTER_OTLP_ENDPOINT set, one trace spans CreateUser, the outbox relay, the worker's
job and UpdateThumbnails, exported by both services to an OTLP collector (the test's own); the log
lines written inside those spans carry their ids.

Both services run as real processes on a NATS and a database of this module's own, so that the
session's services never take (or relay) these events.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from accounts.v1 import accounts_pb2, accounts_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from devstack.nats import NatsServer
from devstack.net import free_port, wait_until
from devstack.postgres import Postgres
from tests.e2e.conftest import REPO, Service
from tests.e2e.support import READY, image_bytes, unique_email, wait_settled

SUBJECT = "accounts.thumbnail.requested"
SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5  # opentelemetry.proto Span.SpanKind
# The caller's own trace: the test sends it, so it knows which spans to look for.
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CALLER_SPAN_ID = 0x00F067AA0BA902B7
UPDATE = "accounts.v1.AccountsService/UpdateThumbnails"
EXPECTED = {
    ("accounts_service", "accounts.v1.AccountsService/CreateUser", SERVER),
    ("accounts_service", f"{SUBJECT} publish", PRODUCER),
    ("imaging_service", f"{SUBJECT} process", CONSUMER),
    ("imaging_service", "callback", 1),  # INTERNAL
    ("imaging_service", UPDATE, CLIENT),
    ("accounts_service", UPDATE, SERVER),
}


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: int
    span_id: int
    parent_id: int
    attributes: dict[str, Any]


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that keeps every span it is sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[Span] = []

    def Export(self, request: Any, context: Any) -> Any:
        with self._lock:
            for resource_spans in request.resource_spans:
                service = next(
                    (a.value.string_value for a in resource_spans.resource.attributes
                     if a.key == "service.name"), "",
                )  # fmt: skip
                for scope_spans in resource_spans.scope_spans:
                    for s in scope_spans.spans:
                        if int.from_bytes(s.trace_id, "big") != TRACE_ID:
                            continue
                        self._spans.append(
                            Span(
                                service, s.name, s.kind, int.from_bytes(s.span_id, "big"),
                                int.from_bytes(s.parent_span_id or b"\0", "big"),
                                {a.key: a.value for a in s.attributes},
                            )
                        )  # fmt: skip
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[Collector, str]]:
    receiver = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield receiver, f"http://127.0.0.1:{port}"
    server.stop(0)


@dataclass(frozen=True)
class Traced:
    addr: str  # the accounts service's
    logs: dict[str, Path]  # by service.name


@pytest.fixture(scope="module")
def traced(
    collector: tuple[Collector, str],
    service_env: dict[str, str],
    own_nats: NatsServer,
    pg: Postgres,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Traced]:
    """Both services with tracing on."""
    accounts_port, imaging_port = free_port(), free_port()
    database = f"traced_{uuid.uuid4().hex[:8]}"
    env = service_env | {
        "DATABASE_URL": pg.create_database(database),
        "NATS_URL": own_nats.url,
        "ACCOUNTS_PORT": str(accounts_port),
        "ACCOUNTS_ADDR": f"127.0.0.1:{accounts_port}",
        "IMAGING_PORT": str(imaging_port),
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector[1],
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # the SDK's batch delay (ms), read by the SDK itself
    }
    logs = tmp_path_factory.mktemp("traced")
    accounts = Service("accounts-traced", "accounts_service", accounts_port, env, logs / "a.log")
    imaging = Service("imaging-traced", "imaging_service", imaging_port, env, logs / "i.log")
    try:
        accounts.start()
        imaging.start()
        logs_by_service = {"accounts_service": logs / "a.log", "imaging_service": logs / "i.log"}
        yield Traced(accounts.addr, logs_by_service)
    finally:
        imaging.process.terminate(30)
        accounts.process.terminate(30)
        pg.drop_database(database)


def the(spans: list[Span], service: str, name: str, kind: int) -> Span:
    found = [s for s in spans if (s.service, s.name, s.kind) == (service, name, kind)]
    assert len(found) == 1, f"{service} {name}: {[(s.service, s.name) for s in spans]}"
    return found[0]


def logged(path: Path, msg: str) -> list[dict[str, Any]]:
    """The JSON lines of a service's log that say `msg` (other output is not JSON)."""
    lines = path.read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    return [entry for entry in entries if entry.get("msg") == msg]


def test_one_trace_spans_create_user_the_render_and_update_thumbnails(
    traced: Traced, collector: tuple[Collector, str]
) -> None:
    receiver, _ = collector
    traceparent = f"00-{TRACE_ID:032x}-{CALLER_SPAN_ID:016x}-01"
    with grpc.insecure_channel(traced.addr) as channel:
        stub = accounts_pb2_grpc.AccountsServiceStub(channel)
        user = stub.CreateUser(
            accounts_pb2.CreateUserRequest(
                email=unique_email("traced"), display_name="Traced",
                avatar_image=image_bytes("photo_grace_hopper_baseline_q88.jpg"),
            ),
            metadata=(("traceparent", traceparent),), timeout=30,
        )  # fmt: skip
        assert wait_settled(stub, user.id).thumbnail_status == READY

    def complete() -> bool:
        exported = {(s.service, s.name, s.kind) for s in receiver.spans()}
        return exported >= EXPECTED  # each service exports in batches of its own

    wait_until(complete, 30, "the whole trace at the collector")
    spans = receiver.spans()
    create = the(spans, "accounts_service", "accounts.v1.AccountsService/CreateUser", SERVER)
    publish = the(spans, "accounts_service", f"{SUBJECT} publish", PRODUCER)
    job = the(spans, "imaging_service", f"{SUBJECT} process", CONSUMER)
    callback = the(spans, "imaging_service", "callback", 1)  # INTERNAL
    update_call = the(spans, "imaging_service", UPDATE, CLIENT)
    update = the(spans, "accounts_service", UPDATE, SERVER)
    assert create.parent_id == CALLER_SPAN_ID
    assert publish.parent_id == create.span_id
    assert job.parent_id == publish.span_id
    for stage in ("fetch", "render", "upload", "callback"):
        assert the(spans, "imaging_service", stage, 1).parent_id == job.span_id, stage
    assert update_call.parent_id == callback.span_id
    assert update.parent_id == update_call.span_id
    assert update.attributes["rpc.grpc.status_code"].int_value == 0
    get_user = the(spans, "imaging_service", "accounts.v1.AccountsService/GetUser", CLIENT)
    assert get_user.parent_id == job.span_id
    # The log lines written inside the request and the job name the exported spans.
    ids = {
        (e["trace_id"], e["span_id"])
        for e in logged(traced.logs["accounts_service"], "user created")
        if "trace_id" in e
    }
    assert (f"{TRACE_ID:032x}", f"{create.span_id:016x}") in ids, ids
    ids = {
        (e["trace_id"], e["span_id"])
        for e in logged(traced.logs["imaging_service"], "job finished")
        if "trace_id" in e
    }
    assert (f"{TRACE_ID:032x}", f"{job.span_id:016x}") in ids, ids
    started = logged(traced.logs["accounts_service"], "serving")
    assert started and "trace_id" not in started[0]  # outside any span


@pytest.mark.parametrize("module", ["accounts_service", "imaging_service"])
def test_a_propagator_that_is_not_installed_stops_the_service_naming_it(
    module: str, service_env: dict[str, str]
) -> None:
    env = service_env | {"OTEL_PROPAGATORS": "tracecontext,b3", "ACCOUNTS_PORT": str(free_port()),
                         "IMAGING_PORT": str(free_port()), "ACCOUNTS_METRICS_PORT": "0",
                         "IMAGING_METRICS_PORT": "0"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", module], env=env, cwd=REPO, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"{module}: configuration error: "
        "OTEL_PROPAGATORS: no propagator 'b3' (install opentelemetry-propagator-b3)"
    )
