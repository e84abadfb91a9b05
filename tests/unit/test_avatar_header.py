"""The accounts service's header check against the shared corpus: cheap, header only."""

from __future__ import annotations

import importlib.util
import io
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image, features

from accounts_service.avatar import AvatarInfo, AvatarLimits, AvatarRejected, inspect_avatar

Corpus = Callable[[str], bytes]
Entry = dict[str, Any]

CODES = {
    "empty": "EMPTY",
    "not_an_image": "NOT_AN_IMAGE",
    "truncated": "TRUNCATED",
    "too_many_pixels": "TOO_MANY_PIXELS",
    "too_large_bytes": "TOO_LARGE",
    "unsupported_format": "UNSUPPORTED_FORMAT",
}


def codec_available(entry: Entry) -> bool:
    if "heif" in entry["codec"]["requires"].lower():
        return importlib.util.find_spec("pillow_heif") is not None
    return bool(features.check_module("avif"))


def median_seconds(runs: int, action: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def test_ok_file_is_accepted_with_its_header_facts(ok_entry: Entry, corpus: Corpus) -> None:
    data = corpus(ok_entry["name"])
    if "codec" in ok_entry and not codec_available(ok_entry):
        with pytest.raises(AvatarRejected) as refused:
            inspect_avatar(data)
        assert refused.value.code == CODES[ok_entry["codec"]["if_unavailable"]["reason"]]
        return
    info = inspect_avatar(data)
    assert (info.format, [info.width, info.height]) == (ok_entry["format"], ok_entry["size"])
    assert info.content_type == Image.MIME[info.format]


def test_reject_file_is_refused_unless_only_decoding_can_tell(
    reject_entry: Entry, corpus: Corpus
) -> None:
    accepted = {CODES[reason] for reason in reject_entry["accept_reasons"]}
    data = corpus(reject_entry["name"])
    if reject_entry["reason"] == "truncated":  # header-only: cut pixel data may pass here
        try:
            inspect_avatar(data)
        except AvatarRejected as exc:
            assert exc.code in accepted
        return
    with pytest.raises(AvatarRejected) as refused:
        inspect_avatar(data)
    assert refused.value.code in accepted
    assert refused.value.reason


def test_limits_are_inclusive(corpus: Corpus) -> None:
    data = corpus("geom_64x64.png")
    exact = AvatarLimits(max_bytes=len(data), max_pixels=64 * 64)
    assert inspect_avatar(data, exact) == AvatarInfo("PNG", "image/png", 64, 64)
    for limits, code in (
        (AvatarLimits(max_bytes=len(data) - 1), "TOO_LARGE"),
        (AvatarLimits(max_pixels=64 * 64 - 1), "TOO_MANY_PIXELS"),
    ):
        with pytest.raises(AvatarRejected) as refused:
            inspect_avatar(data, limits)
        assert refused.value.code == code


def test_twelve_megapixel_jpeg_is_inspected_in_well_under_a_millisecond() -> None:
    out = io.BytesIO()
    Image.radial_gradient("L").resize((4000, 3000)).convert("RGB").save(out, "JPEG")
    data = out.getvalue()
    assert inspect_avatar(data) == AvatarInfo("JPEG", "image/jpeg", 4000, 3000)
    assert median_seconds(50, lambda: inspect_avatar(data)) < 0.001


def test_bomb_header_is_refused_instantly(corpus: Corpus) -> None:
    bomb = corpus("bomb_jpeg_header_60000x60000.jpg")

    def refused() -> None:
        with pytest.raises(AvatarRejected, match="TOO_MANY_PIXELS"):
            inspect_avatar(bomb)

    assert median_seconds(20, refused) < 0.002


def test_rejection_keeps_code_and_reason() -> None:
    error = AvatarRejected("EMPTY", "the upload is empty")
    assert (error.code, error.reason, str(error)) == (
        "EMPTY",
        "the upload is empty",
        "EMPTY: the upload is empty",
    )


def test_any_bytes_give_info_or_avatar_rejected(corpus: Corpus) -> None:
    rng = random.Random(7)
    seeds = [corpus(n) for n in ("exif_orientation_6.jpg", "geom_64x64.png", "anim_cat.webp")]
    seeds += [corpus(n) for n in ("anim_pan.gif", "modern_astronaut.avif")]
    codes = set()
    for i in range(1500):
        blob = bytearray(rng.choice(seeds) if i % 4 else rng.randbytes(rng.randrange(1, 500)))
        for _ in range(rng.randint(1, 6)):
            blob[rng.randrange(min(len(blob), 300))] = rng.randrange(256)
        try:
            inspect_avatar(bytes(blob[: rng.randrange(1, len(blob) + 1)]))
        except AvatarRejected as exc:
            codes.add(exc.code)
    assert {"NOT_AN_IMAGE", "TRUNCATED"} <= codes
