"""probe_head: the header check of an upload from its first bytes, and where it defers to the
whole file (the check accounts runs on a presigned upload without reading it all back)."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable

import pytest
from PIL import Image

from image_policy.formats import ImageInfo, ImageRejected, Limits, measure, probe, probe_head
from tests.corpus import Entry
from tests.hostile import HOSTILE, MIB, SCAN_WORST_CASES, Hostile

Corpus = Callable[[str], bytes]
HEAD = 64 * 1024  # accounts' HEAD_BYTES
HOSTILE_SIZE = 2 * MIB  # past every cap but the metadata ones, in well under a second each


def whole_verdict(data: bytes) -> ImageInfo | str:
    try:
        return probe(data)
    except ImageRejected as exc:
        return exc.code


def head_verdict(data: bytes) -> ImageInfo | str | None:
    try:
        return probe_head(data[:HEAD], len(data))
    except ImageRejected as exc:
        return exc.code


def jpeg(size: tuple[int, int], **options: object) -> bytes:
    out = io.BytesIO()
    Image.effect_noise(size, 64).convert("RGB").save(out, "JPEG", **options)
    return out.getvalue()


def test_a_large_jpeg_is_judged_from_its_head() -> None:
    data = jpeg((1600, 1200), quality=95)
    assert len(data) > 4 * HEAD
    assert head_verdict(data) == whole_verdict(data) == ImageInfo("JPEG", "image/jpeg", 1600, 1200)


def test_what_fits_in_the_head_is_judged_as_the_whole_file(ok_entry: Entry, corpus: Corpus) -> None:
    data = corpus(ok_entry["name"])
    whole = whole_verdict(data)
    if len(data) <= HEAD:
        assert head_verdict(data) == whole
    else:  # a larger file: the same verdict, or the whole file is needed
        assert head_verdict(data) in (whole, None)


def test_a_rejected_file_is_never_accepted_from_its_head(
    reject_entry: Entry, corpus: Corpus
) -> None:
    """A refusal is always the whole file's, and a head passes only where the whole file's
    header check passes too (pixel data cut short: the renderer refuses it)."""
    data = corpus(reject_entry["name"])
    assert head_verdict(data) in (whole_verdict(data), None)


def test_webp_avif_and_heif_always_need_the_whole_file(corpus: Corpus) -> None:
    for name in ("photo_camera_lossless.webp", "anim_cat.webp", "modern_astronaut.avif",
                 "modern_coffee.heic"):  # fmt: skip
        data = corpus(name)
        assert probe_head(data[:16], len(data)) is None, name


def test_a_header_longer_than_the_head_needs_the_whole_file() -> None:
    """A JPEG whose metadata before the first scan outgrows the head (a large ICC profile, the
    depth maps some phones put in XMP)."""
    image = jpeg((640, 480))
    comment = b"\xff\xfe" + struct.pack(">H", 60_002) + b"x" * 60_000
    data = image[:2] + comment * 3 + image[2:]
    assert probe_head(data[:HEAD], len(data)) is None
    assert probe(data) == ImageInfo("JPEG", "image/jpeg", 640, 480)


def test_the_size_alone_can_refuse() -> None:
    data = jpeg((64, 64))
    with pytest.raises(ImageRejected) as refused:
        probe_head(data, 21 * MIB, Limits(max_bytes=20 * MIB))
    assert refused.value.code == "TOO_LARGE"


@pytest.mark.parametrize("hostile", HOSTILE, ids=[h.name for h in HOSTILE])
def test_a_hostile_file_is_refused_from_the_whole_file_or_by_the_renderers_pre_scan(
    hostile: Hostile,
) -> None:
    """What the head lets through, the whole-file pre-scan that runs before any render (and
    before imaging admits the job: `measure`) refuses."""
    data = hostile.build(max(HOSTILE_SIZE, hostile.min_size))
    verdict = head_verdict(data)
    if verdict is None:  # the caller probes the whole file: today's verdict
        assert whole_verdict(data) == "TOO_COMPLEX"
    elif isinstance(verdict, str):
        assert verdict == whole_verdict(data) == "TOO_COMPLEX"
    else:
        with pytest.raises(ImageRejected) as refused:
            measure(data)
        assert refused.value.code == "TOO_COMPLEX"


@pytest.mark.parametrize("name,build", SCAN_WORST_CASES, ids=[n for n, _ in SCAN_WORST_CASES])
def test_legal_files_at_the_limits_get_the_whole_files_verdict_from_their_head(
    name: str, build: Callable[[int], bytes]
) -> None:
    data = build(HOSTILE_SIZE)
    assert head_verdict(data) in (whole_verdict(data), None)
