"""ImagingService over a real channel: previews with the worker's renderer, queue stats."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import empty_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status
from imaging.v1 import imaging_pb2

from tests.e2e.conftest import Service, health_status
from tests.e2e.support import image_bytes, png_image


def test_render_thumbnails_returns_round_pngs(imaging_stub) -> None:
    reply = imaging_stub.RenderThumbnails(
        imaging_pb2.RenderThumbnailsRequest(image=image_bytes("photo_chelsea.png")), timeout=30
    )
    assert [t.size for t in reply.thumbnails] == [100, 200, 400]
    for thumb in reply.thumbnails:
        assert thumb.content_type == "image/png"
        assert (thumb.width, thumb.height) == (thumb.size, thumb.size)
        png_image(thumb.data, thumb.size)


def test_render_thumbnails_custom_sizes(imaging_stub) -> None:
    reply = imaging_stub.RenderThumbnails(
        imaging_pb2.RenderThumbnailsRequest(image=image_bytes("geom_64x64.png"), sizes=[16, 1024]),
        timeout=30,
    )
    assert [t.size for t in reply.thumbnails] == [16, 1024]


def test_render_thumbnails_refuses_bad_sizes_and_bad_images(imaging_stub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        imaging_stub.RenderThumbnails(
            imaging_pb2.RenderThumbnailsRequest(image=image_bytes("geom_64x64.png"), sizes=[8])
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        imaging_stub.RenderThumbnails(
            imaging_pb2.RenderThumbnailsRequest(image=image_bytes("bad_truncated_50pct.jpg"))
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in status.details)
    assert info.reason == "TRUNCATED"


def test_queue_stats_answer(imaging_stub) -> None:
    stats = imaging_stub.GetQueueStats(empty_pb2.Empty(), timeout=10)
    assert stats.pending >= 0 and stats.ack_pending >= 0


def test_both_services_report_serving_for_each_name(pipeline: tuple[Service, Service]) -> None:
    accounts, imaging = pipeline
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health_status(accounts.addr, "accounts.v1.AccountsService") == serving
    assert health_status(imaging.addr, "imaging.v1.ImagingService") == serving
