"""The one image policy both services apply: its error and codes, the verdicts where the two
copies it replaced had drifted apart, and Pillow's process-wide settings under threads."""

from __future__ import annotations

import io
import pickle
import struct
import threading
import warnings
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from image_policy.errors import CODES, ImageRejected
from image_policy.formats import ImageInfo, Limits, pillow_configured, probe
from image_policy.prescan import TooComplex
from image_policy.sniff import accepted_formats

Corpus = Callable[[str], bytes]


def encoded(fmt: str, size: tuple[int, int] = (8, 8)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(out, fmt)
    return out.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + bytes(16)


def verdict(data: bytes) -> str:
    with pytest.raises(ImageRejected) as refused:
        probe(data)
    assert refused.value.reason
    return refused.value.code


# ----------------------------------------------------------------------------- the error


def test_rejection_keeps_code_and_reason_and_pickles() -> None:
    error = pickle.loads(pickle.dumps(ImageRejected("EMPTY", "the upload is empty")))
    assert (error.code, error.reason, str(error)) == (
        "EMPTY",
        "the upload is empty",
        "EMPTY: the upload is empty",
    )


def test_a_code_outside_the_list_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="TOO_BIG"):
        ImageRejected("TOO_BIG", "a typo")


def test_the_pre_scan_refusal_is_the_same_error_type() -> None:
    error = pickle.loads(pickle.dumps(TooComplex("more than 1,000 JPEG segments")))
    assert isinstance(error, ImageRejected)
    assert (error.code, error.reason) == ("TOO_COMPLEX", "more than 1,000 JPEG segments")
    assert set(CODES) == {
        "EMPTY",
        "TOO_LARGE",
        "NOT_AN_IMAGE",
        "UNSUPPORTED_FORMAT",
        "TOO_MANY_PIXELS",
        "TOO_COMPLEX",
        "TRUNCATED",
    }


# ----------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        # Where accounts' copy used to differ (it named formats by fewer signatures).
        ("JPEG 2000 in its JP2 box", encoded("JPEG2000"), "UNSUPPORTED_FORMAT"),
        ("JPEG XL container", b"\x00\x00\x00\x0cJXL \r\n\x87\n" + bytes(64), "UNSUPPORTED_FORMAT"),
        (
            "SVG after a doctype",
            b"<!DOCTYPE svg>\n<svg width='8' height='8'/>",
            "UNSUPPORTED_FORMAT",
        ),
        (
            "MP4 video",
            b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(64),
            "NOT_AN_IMAGE",
        ),
        ("'BM' and zeros", b"BM" + bytes(60), "NOT_AN_IMAGE"),
        # Where both agreed.
        ("BMP", encoded("BMP"), "UNSUPPORTED_FORMAT"),
        ("TIFF", encoded("TIFF"), "UNSUPPORTED_FORMAT"),
        ("ICO", encoded("ICO"), "UNSUPPORTED_FORMAT"),
        ("QOI", encoded("QOI"), "UNSUPPORTED_FORMAT"),
        ("PNG declaring no columns", png_declaring(0, 8), "TRUNCATED"),
        ("damaged WebP", b"RIFF\x20\x00\x00\x00WEBPVP8 " + bytes(24), "TRUNCATED"),
        ("plain text", b"hello, this is not an image\n" * 4, "NOT_AN_IMAGE"),
        ("empty", b"", "EMPTY"),
    ],
)
def test_bytes_no_accepted_opener_takes_get_the_precise_code(
    name: str, data: bytes, code: str
) -> None:
    assert verdict(data) == code, name


def test_heif_is_judged_by_what_this_installation_decodes() -> None:
    heif = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
    expected = "TRUNCATED" if "HEIF" in accepted_formats() else "UNSUPPORTED_FORMAT"
    assert verdict(heif) == expected


def test_a_multi_picture_jpeg_is_served_as_jpeg() -> None:
    out = io.BytesIO()
    Image.new("RGB", (12, 9)).save(
        out, "MPO", save_all=True, append_images=[Image.new("RGB", (12, 9))]
    )
    assert probe(out.getvalue()) == ImageInfo("MPO", "image/jpeg", 12, 9)


# ----------------------------------------------------------------------------- Pillow's settings


def test_overlapping_calls_restore_pillow_settings_only_when_the_last_one_leaves() -> None:
    saved_pixels, saved_filters = Image.MAX_IMAGE_PIXELS, list(warnings.filters)
    first, second = pillow_configured(Limits(max_pixels=100)), pillow_configured(Limits())
    larger_budget = (Limits().max_pixels + 1) // 2
    first.__enter__()
    assert Image.MAX_IMAGE_PIXELS == 50
    second.__enter__()
    assert larger_budget == Image.MAX_IMAGE_PIXELS
    first.__exit__(None, None, None)  # out of order, as threads leave
    assert larger_budget == Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings(record=True) as shown:
        warnings.warn("a note on malformed input", UserWarning, stacklevel=1)
    assert shown == []  # still quiet
    second.__exit__(None, None, None)
    assert (Image.MAX_IMAGE_PIXELS, warnings.filters) == (saved_pixels, saved_filters)


def test_checks_in_many_threads_leave_pillow_as_they_found_it(corpus: Corpus) -> None:
    saved_pixels, saved_filters = Image.MAX_IMAGE_PIXELS, list(warnings.filters)
    files = [corpus(n) for n in ("geom_64x64.png", "anim_pan.gif", "bomb_png_52mp_8000x6500.png")]
    start = threading.Barrier(8)

    def check(i: int) -> str:
        start.wait()
        codes = []
        for j in range(30):
            try:
                codes.append(probe(files[(i + j) % len(files)]).format)
            except ImageRejected as exc:
                codes.append(exc.code)
        return ",".join(sorted(set(codes)))

    with ThreadPoolExecutor(8) as threads:
        results = set(threads.map(check, range(8)))
    assert results == {"GIF,PNG,TOO_MANY_PIXELS"}
    assert (Image.MAX_IMAGE_PIXELS, warnings.filters) == (saved_pixels, saved_filters)
