"""The accounts service's header check against the shared corpus: cheap, header only."""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from accounts_service.avatar import AvatarInfo, AvatarLimits, AvatarRejected, inspect_avatar
from tests.corpus import CODES, codec_available

Corpus = Callable[[str], bytes]
Entry = dict[str, Any]


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


def test_twelve_megapixel_jpeg_is_judged_from_its_header_alone() -> None:
    out = io.BytesIO()
    Image.radial_gradient("L").resize((4000, 3000)).convert("RGB").save(out, "JPEG")
    data = out.getvalue()
    assert inspect_avatar(data) == AvatarInfo("JPEG", "image/jpeg", 4000, 3000)
    # The first 4 KiB hold the header and hardly any pixels: no decode is needed.
    assert inspect_avatar(data[:4096]) == AvatarInfo("JPEG", "image/jpeg", 4000, 3000)


def test_bomb_header_is_refused(corpus: Corpus) -> None:
    with pytest.raises(AvatarRejected, match="TOO_MANY_PIXELS"):
        inspect_avatar(corpus("bomb_jpeg_header_60000x60000.jpg"))


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
