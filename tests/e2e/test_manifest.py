"""Every shared test image ends as its manifest says, and the worker keeps serving after each."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from minio import Minio
from PIL import Image

from devstack.s3 import S3Server
from tests.corpus import CODES, MARKERS, QUADRANT_SAMPLES, manifest, read
from tests.e2e.conftest import Service
from tests.e2e.support import (
    FAILED,
    READY,
    create_user,
    image_bytes,
    png_image,
    wait_settled,
)

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}


def accepted_codes(entry: dict[str, Any]) -> set[str]:
    if entry["expected"] == "reject":
        return {CODES[r] for r in entry["accept_reasons"]}
    if "codec" in entry:  # optional decoder: an honest refusal is fine too
        return {CODES[entry["codec"]["if_unavailable"]["reason"]]}
    return set()


def near(pixel: tuple[int, ...], colour: tuple[int, int, int], tolerance: int = 60) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


def colour_name(pixel: tuple[int, ...]) -> str:
    """The nearest of the test cards' four marker colours."""

    def distance(name: str) -> int:
        return sum((a - b) ** 2 for a, b in zip(pixel[:3], MARKERS[name], strict=True))

    return min(MARKERS, key=distance)


def check_picture(entry: dict[str, Any], large: Image.Image) -> None:
    rgba = large.convert("RGBA")
    if orientation := entry.get("orientation"):
        for quadrant, colour in orientation["upright_quadrant_colours"].items():
            fx, fy = QUADRANT_SAMPLES[quadrant]
            pixel = rgba.getpixel((int(fx * 400), int(fy * 400)))
            assert colour_name(pixel) == colour, f"{quadrant} is {pixel}, want {colour}"
    if first := entry.get("first_frame"):
        assert colour_name(rgba.getpixel((200, 200))) == first["centre_colour"]
    if hidden := entry.get("hidden_key_colour"):
        data = rgba.tobytes()
        pixels = (tuple(data[i : i + 4]) for i in range(0, len(data), 4))
        opaque_hidden = [p for p in pixels if p[3] == 255 and near(p, tuple(hidden), 10)]
        assert len(opaque_hidden) < 50, "the transparent key colour shows"


@pytest.fixture(scope="module")
def outcomes(pipeline: tuple[Service, Service], accounts_stub) -> dict[str, Any]:
    """Creates one user per manifest file at once, then waits for each to settle."""
    results: dict[str, Any] = {}
    for entry in manifest()["files"]:
        try:
            results[entry["name"]] = create_user(accounts_stub, read(entry["name"]))
        except grpc.RpcError as err:
            results[entry["name"]] = err
    for name, created in results.items():
        if not isinstance(created, grpc.RpcError):
            results[name] = wait_settled(accounts_stub, created.id, timeout=180)
    return results


@pytest.mark.parametrize("entry", manifest()["files"], ids=lambda e: e["name"])
def test_manifest_outcome(
    entry: dict[str, Any], outcomes: dict[str, Any], s3_server: S3Server, s3_bucket: str
) -> None:
    outcome = outcomes[entry["name"]]
    codes = accepted_codes(entry)
    if isinstance(outcome, grpc.RpcError):
        assert outcome.code() == grpc.StatusCode.INVALID_ARGUMENT, outcome
        status = rpc_status.from_call(outcome)
        assert status is not None, "no rich error details"
        details = {d.type_url.rsplit("/", 1)[-1]: d for d in status.details}
        bad = error_details_pb2.BadRequest()
        details["google.rpc.BadRequest"].Unpack(bad)
        assert [v.field for v in bad.field_violations] == ["avatar_image"]
        info = error_details_pb2.ErrorInfo()
        details["google.rpc.ErrorInfo"].Unpack(info)
        assert info.reason in codes, f"refused as {info.reason}, want one of {codes}"
        return
    if outcome.thumbnail_status == FAILED:
        assert outcome.failure_code in codes, f"{outcome.failure_code}: {outcome.failure_reason}"
        assert outcome.failure_reason
        return
    assert entry["expected"] == "ok", f"{entry['name']} should have been refused"
    assert outcome.thumbnail_status == READY
    client: Minio = s3_server.client()
    large = png_image(client.get_object(s3_bucket, outcome.thumbnails.large.object).read(), 400)
    check_picture(entry, large)


def test_worker_still_serves_after_every_bad_input(outcomes: dict[str, Any], accounts_stub) -> None:
    created = create_user(accounts_stub, image_bytes("photo_chelsea.png"))
    assert wait_settled(accounts_stub, created.id).thumbnail_status == READY
