"""An iPhone photo (HEIC) through both services: inline and by presigned upload, to READY and
upright."""

from __future__ import annotations

import io
import urllib.request

import pillow_heif
from accounts.v1.accounts_pb2_grpc import AccountsServiceStub
from minio import Minio
from PIL import Image

from devstack.s3 import S3Server
from image_policy.sniff import accepted_formats
from tests.e2e.conftest import Service
from tests.e2e.support import READY, SIZES, create_user, png_image, wait_settled
from tests.e2e.test_upload import create_from, upload

RED, BLUE = (220, 20, 20), (20, 20, 220)


def iphone_heic() -> bytes:
    """A portrait photo as an iPhone held upright stores it: the upright picture (top half red,
    bottom half blue, 768x1024) kept as the sensor's landscape pixels, HEVC-coded in a grid of
    512 px tiles, with EXIF orientation 6 and the matching ``irot``, made by pillow_heif."""
    assert "HEIF" in accepted_formats()  # registers pillow_heif's encoder with Pillow
    upright = Image.new("RGB", (768, 1024), RED)
    upright.paste(BLUE, (0, 512, 768, 1024))
    exif = Image.Exif()
    exif[0x010F] = "Apple"
    exif[0x0110] = "iPhone 15"
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = io.BytesIO()
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    stored.save(out, "HEIF", exif=exif.tobytes(), quality=85, tile_size=512)
    data = out.getvalue()
    heif = Image.open(io.BytesIO(data))
    assert isinstance(heif, pillow_heif.HeifImageFile)
    assert heif.size == (768, 1024) and heif.info["original_orientation"] == 6
    assert b"ftypheic" in data[:12] and b"grid" in data and b"irot" in data
    return data


def assert_upright(png: bytes, size: int) -> None:
    """Red above, blue below, at both sides of the centre: turned once, the right way."""
    thumbnail = png_image(png, size)
    for x in (0.3, 0.7):
        for y, colour in ((0.25, RED), (0.75, BLUE)):
            pixel = thumbnail.getpixel((int(x * size), int(y * size)))
            assert isinstance(pixel, tuple)
            assert max(abs(a - b) for a, b in zip(pixel[:3], colour, strict=True)) < 16, (
                f"{size} px thumbnail at ({x}, {y}) is {pixel}, not {colour}"
            )


def test_an_iphone_heic_reaches_ready_upright(
    pipeline: tuple[Service, Service],
    accounts_stub: AccountsServiceStub,
    s3_server: S3Server,
    s3_bucket: str,
) -> None:
    created = create_user(accounts_stub, iphone_heic(), display_name="iPhone")
    user = wait_settled(accounts_stub, created.id)
    assert user.thumbnail_status == READY, user.failure_reason
    client: Minio = s3_server.client()
    original = client.stat_object(s3_bucket, user.avatar.object)
    assert original.content_type == "image/heif"
    for name, size in SIZES.items():
        with urllib.request.urlopen(getattr(user.thumbnails, name).url, timeout=10) as resp:
            assert_upright(resp.read(), size)


def test_a_presigned_heic_upload_reaches_ready_upright(
    pipeline: tuple[Service, Service], accounts_stub: AccountsServiceStub
) -> None:
    user = create_from(accounts_stub, upload(accounts_stub, iphone_heic(), "image/heic"))
    settled = wait_settled(accounts_stub, user.id)
    assert settled.thumbnail_status == READY, settled.failure_reason
    with urllib.request.urlopen(settled.thumbnails.large.url, timeout=10) as resp:
        assert_upright(resp.read(), SIZES["large"])
