"""ImagingService over a real channel: previews with the worker's renderer behind the internal
credential, queue stats, dead-letter replays, and the bound on previews in flight."""

from __future__ import annotations

import asyncio
import io
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import nats
import pytest
from google.protobuf import empty_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status
from imaging.v1 import imaging_pb2, imaging_pb2_grpc
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from devstack.nats import NatsServer
from devstack.net import free_ports, wait_until
from tests.e2e.conftest import Service, health_status
from tests.e2e.support import image_bytes, png_image

Metadata = tuple[tuple[str, str], ...]


@pytest.fixture(scope="module")
def auth(internal_token: str) -> Metadata:
    return (("authorization", f"Bearer {internal_token}"),)


def slow_image() -> bytes:
    """A legal but slow 50 MP image: a progressive JPEG of one colour (300 KB) whose luma AC
    refinement scan comes 85 more times (95 scans, under the pre-scan's 100). It renders in
    about 2.7 s here, well within its 15 s budget."""
    out = io.BytesIO()
    Image.new("RGB", (7071, 7071), (90, 140, 200)).save(out, "JPEG", progressive=True)
    data = out.getvalue()
    last_scan, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    return data[:end] + data[last_scan:end] * 85 + data[end:]


def gauge(url: str, name: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    return next(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def test_render_thumbnails_returns_round_pngs(imaging_stub, auth: Metadata) -> None:
    reply = imaging_stub.RenderThumbnails(
        imaging_pb2.RenderThumbnailsRequest(image=image_bytes("photo_chelsea.png")),
        metadata=auth,
        timeout=30,
    )
    assert [t.size for t in reply.thumbnails] == [100, 200, 400]
    for thumb in reply.thumbnails:
        assert thumb.content_type == "image/png"
        assert (thumb.width, thumb.height) == (thumb.size, thumb.size)
        png_image(thumb.data, thumb.size)


def test_render_thumbnails_custom_sizes(imaging_stub, auth: Metadata) -> None:
    reply = imaging_stub.RenderThumbnails(
        imaging_pb2.RenderThumbnailsRequest(image=image_bytes("geom_64x64.png"), sizes=[16, 1024]),
        metadata=auth,
        timeout=30,
    )
    assert [t.size for t in reply.thumbnails] == [16, 1024]


def test_render_thumbnails_refuses_bad_sizes_and_bad_images(imaging_stub, auth: Metadata) -> None:
    with pytest.raises(grpc.RpcError) as err:
        imaging_stub.RenderThumbnails(
            imaging_pb2.RenderThumbnailsRequest(image=image_bytes("geom_64x64.png"), sizes=[8]),
            metadata=auth,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        imaging_stub.RenderThumbnails(
            imaging_pb2.RenderThumbnailsRequest(image=image_bytes("bad_truncated_50pct.jpg")),
            metadata=auth,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in status.details)
    assert info.reason == "TRUNCATED"


@pytest.mark.parametrize(
    "credential",
    [
        lambda token: (),
        lambda token: (("authorization", "Bearer not-the-token"),),
        lambda token: (("authorization", token),),
    ],
    ids=["none", "a wrong token", "the token without Bearer"],
)
def test_render_and_replay_refuse_a_missing_or_wrong_credential(
    imaging_stub, internal_token: str, credential: Callable[[str], Metadata]
) -> None:
    metadata = credential(internal_token)
    calls = [
        (imaging_stub.RenderThumbnails, imaging_pb2.RenderThumbnailsRequest(image=b"x")),
        (imaging_stub.ReplayDeadLetters, imaging_pb2.ReplayDeadLettersRequest()),
    ]
    for call, request in calls:
        with pytest.raises(grpc.RpcError) as err:
            call(request, metadata=metadata, timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert internal_token not in (err.value.details() or "")


def test_queue_stats_answer_without_a_credential(imaging_stub) -> None:
    stats = imaging_stub.GetQueueStats(empty_pb2.Empty(), timeout=10)
    assert stats.pending >= 0 and stats.ack_pending >= 0


def test_both_services_report_serving_for_each_name(pipeline: tuple[Service, Service]) -> None:
    accounts, imaging = pipeline
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health_status(accounts.addr, "accounts.v1.AccountsService") == serving
    assert health_status(imaging.addr, "imaging.v1.ImagingService") == serving


@pytest.fixture(scope="module")
def lone_imaging(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, NatsServer]]:
    """An imaging service of its own, on a NATS of its own (a dead-letter stream never written
    to), with one render process and room for one preview."""
    folder = tmp_path_factory.mktemp("lone-imaging")
    nats_server = NatsServer(folder / "nats", log_path=folder / "nats.log")
    nats_server.start()
    port, metrics_port = free_ports(2)
    env = service_env | {
        "NATS_URL": nats_server.url,
        "IMAGING_PORT": str(port),
        "IMAGING_METRICS_PORT": str(metrics_port),
        "RENDER_PROCESSES": "1",
        "RENDER_THUMBNAILS_MAX_IN_FLIGHT": "1",
    }
    service = Service("imaging-lone", "imaging_service", port, env, folder / "i.log", metrics_port)
    try:
        service.start()
        yield service, nats_server
    finally:
        service.process.terminate(30)
        nats_server.stop()


def dead_letter(nats_url: str, payload: bytes) -> None:
    async def publish() -> None:
        nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            await nc.jetstream().publish(
                "dlq.accounts.thumbnail.requested", payload, stream="ACCOUNTS_DLQ"
            )
        finally:
            await nc.close()

    asyncio.run(publish())


def test_replaying_an_empty_dead_letter_stream_replays_nothing(
    lone_imaging: tuple[Service, NatsServer], auth: Metadata
) -> None:
    service, nats_server = lone_imaging
    with grpc.insecure_channel(service.addr) as channel:
        stub = imaging_pb2_grpc.ImagingServiceStub(channel)
        replay = imaging_pb2.ReplayDeadLettersRequest()
        # Never written to: its first sequence is 0, which NATS refuses to look up.
        assert stub.GetQueueStats(empty_pb2.Empty(), timeout=10).dead_lettered == 0
        assert stub.ReplayDeadLetters(replay, metadata=auth, timeout=10).replayed == 0
        # Emptied by a replay: its first sequence is past its last.
        dead_letter(nats_server.url, b"\xff not an event")  # the worker terms it once replayed
        assert stub.ReplayDeadLetters(replay, metadata=auth, timeout=10).replayed == 1
        assert stub.ReplayDeadLetters(replay, metadata=auth, timeout=10).replayed == 0
        assert stub.GetQueueStats(empty_pb2.Empty(), timeout=10).dead_lettered == 0


def test_a_preview_past_the_limit_is_refused_at_once_with_retry_info(
    lone_imaging: tuple[Service, NatsServer], auth: Metadata
) -> None:
    service, _ = lone_imaging
    small = imaging_pb2.RenderThumbnailsRequest(image=image_bytes("geom_64x64.png"), sizes=[32])
    with grpc.insecure_channel(service.addr) as channel, ThreadPoolExecutor(1) as background:
        stub = imaging_pb2_grpc.ImagingServiceStub(channel)
        slow = imaging_pb2.RenderThumbnailsRequest(image=slow_image(), sizes=[64])
        running = background.submit(stub.RenderThumbnails, slow, metadata=auth, timeout=60)
        in_flight = "imaging_previews_in_flight"
        wait_until(lambda: gauge(service.metrics_url, in_flight) == 1, 30, "the preview runs")
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            stub.RenderThumbnails(small, metadata=auth, timeout=10)
        assert time.monotonic() - started < 1.0
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(err.value)
        assert status is not None
        retry = error_details_pb2.RetryInfo()
        assert any(d.Unpack(retry) for d in status.details)
        assert 0 < retry.retry_delay.ToTimedelta().total_seconds() <= 5
        assert [t.size for t in running.result().thumbnails] == [64]
        # Its slot is free again once it has rendered.
        wait_until(lambda: gauge(service.metrics_url, in_flight) == 0, 30, "the slot is free")
        again = stub.RenderThumbnails(small, metadata=auth, timeout=30)
        assert [t.size for t in again.thumbnails] == [32]
