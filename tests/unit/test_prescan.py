"""The structural pre-scan: hostile files refused with a reason, legitimate and damaged ones not;
and the header check both services run (image_policy.formats) refuses what it refuses."""

from __future__ import annotations

import asyncio
import contextlib
import io
import pickle
import random
import re
import struct
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image, ImageCms, PngImagePlugin

from image_policy import formats, jpeg
from image_policy.formats import ImageRejected, probe, probe_off_loop
from image_policy.prescan import ScanLimits, Structure, TooComplex, prescan
from imaging_service.render import render
from tests import hostile
from tests.corpus import codec_available

Corpus = Callable[[str], bytes]
Entry = dict[str, Any]
DEFAULTS = ScanLimits()
LIMIT = DEFAULTS.max_bytes


def too_complex(data: bytes, limits: ScanLimits = DEFAULTS) -> str:
    with pytest.raises(TooComplex) as refused:
        prescan(data, limits)
    return refused.value.reason


def encoded(img: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def picture(size: tuple[int, int] = (64, 48)) -> Image.Image:
    return Image.radial_gradient("L").resize(size).convert("RGB")


def frames(count: int, size: int = 32) -> list[Image.Image]:
    return [Image.new("RGB", (size, size), (i * 7 % 256, 80, 160)) for i in range(count)]


def icc_profile(size: int) -> bytes:
    """An sRGB profile padded to ``size`` bytes (its size field says so)."""
    profile = bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    return struct.pack(">I", size) + profile[4:] + bytes(size - len(profile))


def exif_with_maker_note(note: bytes) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation
    exif[0x010F] = "Phone maker"
    exif.get_ifd(0x8769)[0x927C] = note  # maker note
    exif.get_ifd(0x8825)[0x0001] = "N"  # GPS latitude ref
    return exif.tobytes()


def tiff_loop() -> bytes:
    """A TIFF block whose IFD0 links to itself as its next directory."""
    return b"II*\x00" + struct.pack("<IHHHII", 8, 1, 0x0112, 3, 1, 1) + struct.pack("<I", 8)


# ----------------------------------------------------------------------------- hostile files


@pytest.mark.parametrize("case", hostile.HOSTILE, ids=[h.name for h in hostile.HOSTILE])
def test_hostile_file_at_the_byte_limit_is_too_complex(case: hostile.Hostile) -> None:
    data = case.build(LIMIT)
    assert len(data) <= LIMIT
    reason = too_complex(data)
    assert re.search(r"(more than [\d,]+ \w+|offset [\d,]+ is reached twice)", reason), reason


def test_reasons_name_what_and_how_many() -> None:
    assert too_complex(hostile.jpeg_app_flood(100_000)) == (
        "more than 1,000 JPEG segments before the first frame"
    )
    assert too_complex(hostile.jpeg_progressive_bomb(100_000)) == (
        "more than 100 scans in a JPEG frame"
    )
    assert too_complex(hostile.gif_many_frames(100_000)) == "more than 3,000 GIF frames"
    assert too_complex(hostile.exif_ifd_loop(0)) == (
        "the EXIF directory at offset 8 is reached twice (a loop)"
    )
    assert too_complex(hostile.png_text_bomb(100_000)).startswith(
        "more than 8,388,608 bytes of metadata (PNG text"
    )


@pytest.mark.parametrize(("name", "build"), hostile.SCAN_WORST_CASES)
def test_worst_case_shapes_at_the_byte_limit_are_accepted(
    name: str, build: hostile.Factory
) -> None:
    structure = prescan(build(LIMIT))
    assert structure.format is not None and structure.frames >= 1


def test_every_limit_is_inclusive() -> None:
    gif = encoded(frames(5)[0], "GIF", save_all=True, append_images=frames(5)[1:])
    assert prescan(gif, ScanLimits(max_frames=5)).frames == 5
    assert too_complex(gif, ScanLimits(max_frames=4)) == "more than 4 GIF frames"
    jpeg = encoded(picture(), "JPEG", progressive=True)
    scans = jpeg.count(b"\xff\xda")
    assert prescan(jpeg, ScanLimits(max_scans=scans)).format == "JPEG"
    assert "scans" in too_complex(jpeg, ScanLimits(max_scans=scans - 1))
    png = hostile.png_chunk_flood(0)  # the small PNG with one private chunk before IDAT
    assert prescan(png, ScanLimits(max_segments=2)).format == "PNG"  # IHDR, prVt
    assert "PNG chunks" in too_complex(png, ScanLimits(max_segments=1))
    jpeg = encoded(picture(), "JPEG", icc_profile=icc_profile(100_000))
    held = 100_000 + 2 * len(b"ICC_PROFILE\0??")  # the profile in two segments
    assert prescan(jpeg, ScanLimits(max_metadata_bytes=held)).format == "JPEG"
    assert "metadata" in too_complex(jpeg, ScanLimits(max_metadata_bytes=held - 1))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "AVIF"])
def test_exif_loop_is_found_in_every_container(fmt: str) -> None:
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    data = bytearray(encoded(picture(), fmt, exif=exif.tobytes()))
    tiff = data.index(b"MM\x00*")  # Pillow writes EXIF big-endian
    ifd0 = tiff + struct.unpack_from(">I", data, tiff + 4)[0]
    entries = struct.unpack_from(">H", data, ifd0)[0]
    struct.pack_into(">I", data, ifd0 + 2 + 12 * entries, ifd0 - tiff)  # next IFD: itself
    assert "(a loop)" in too_complex(bytes(data))


def png_with_text(kind: bytes, payload: bytes) -> bytes:
    png = encoded(picture(), "PNG")
    at = png.index(b"IDAT") - 4
    return png[:at] + hostile._chunk(kind, payload) + png[at:]


def raw_profile(tiff: bytes) -> str:
    """ImageMagick's hex-encoded EXIF text: a blank line, the name, the size, then hex lines."""
    lines = [tiff[i : i + 36].hex() for i in range(0, len(tiff), 36)]
    return f"\nexif\n{len(tiff):8d}\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize("compressed", [False, True])
def test_hex_exif_in_png_text_is_read_as_pillow_reads_it(compressed: bool) -> None:
    value, count = 20_000, 500  # 500 entries copying the same 20 KB: 10 MB for Pillow
    at = 8 + 2 + 12 * count + 4
    entries = struct.pack("<H", count) + b"".join(
        struct.pack("<HHII", 0xC000 + i, 7, value, at) for i in range(count)
    )
    bomb = b"II*\x00" + struct.pack("<I", 8) + entries + bytes(4) + bytes(value)
    legit = exif_with_maker_note(bytes(value))[6:]
    for tiff, refused in ((bomb, True), (legit, False)):
        text = raw_profile(tiff).encode()
        if compressed:
            data = png_with_text(b"zTXt", b"Raw profile type exif\0\0" + zlib.compress(text))
        else:
            data = png_with_text(b"tEXt", b"Raw profile type exif\0" + text)
        if refused:
            assert "EXIF values" in too_complex(data)
        else:
            assert prescan(data) == Structure("PNG", 64, 48, 1)
            assert Image.open(io.BytesIO(data)).getexif()[0x0112] == 6  # as Pillow reads it


def test_too_complex_pickles_and_reads_well() -> None:
    error = TooComplex("more than 3 GIF frames")
    again = pickle.loads(pickle.dumps(error))
    assert (again.code, again.reason, str(again)) == (
        "TOO_COMPLEX",
        "more than 3 GIF frames",
        "TOO_COMPLEX: more than 3 GIF frames",
    )


# ----------------------------------------------------------------------------- legitimate files


def test_ok_corpus_file_passes_with_its_header_facts(ok_entry: Entry, corpus: Corpus) -> None:
    structure = prescan(corpus(ok_entry["name"]))
    assert structure == Structure(ok_entry["format"], *ok_entry["size"], ok_entry["frames"])


def test_reject_corpus_file_is_left_to_the_header_check(
    reject_entry: Entry, corpus: Corpus
) -> None:
    prescan(corpus(reject_entry["name"]))  # no TooComplex: damaged, foreign or huge is not complex


def phone_jpeg() -> bytes:
    """Phone-like: big EXIF (a maker note holding a thumbnail), a 1 MB ICC profile, XMP,
    Photoshop resources, MPF with a second image, and a motion-photo video after it."""
    thumbnail = encoded(picture((160, 120)), "JPEG")
    exif = exif_with_maker_note(thumbnail + bytes(60_000 - len(thumbnail)))
    resources = b"".join(
        b"8BIM" + struct.pack(">HBxI", 0x0404 + i, 0, 200) + bytes(200) for i in range(30)
    )
    photoshop = b"\xff\xed" + struct.pack(">H", 16 + len(resources)) + b"Photoshop 3.0\0"
    main, depth = picture((800, 600)), picture((400, 300))
    mpo = encoded(
        main,
        "MPO",
        save_all=True,
        append_images=[depth],
        exif=exif,
        icc_profile=icc_profile(1_000_000),
        xmp=b"<x:xmpmeta>" + b" " * 20_000 + b"</x:xmpmeta>",
        extra=photoshop + resources,
        progressive=True,
    )
    video = random.Random(1).randbytes(3_000_000) + b"\xff\xda\xff\xd9" * 200
    return mpo + video


@pytest.mark.parametrize(
    ("name", "build", "expected"),
    [
        ("phone JPEG", phone_jpeg, Structure("JPEG", 800, 600, 1)),
        (
            "4 MB print profile",
            lambda: encoded(picture(), "JPEG", icc_profile=icc_profile(4_000_000)),
            Structure("JPEG", 64, 48, 1),
        ),
        (
            "GIF of 400 frames",
            lambda: encoded(frames(400)[0], "GIF", save_all=True, append_images=frames(400)[1:]),
            Structure("GIF", 32, 32, 400),
        ),
        (
            "APNG of 400 frames",
            lambda: encoded(frames(400)[0], "PNG", save_all=True, append_images=frames(400)[1:]),
            Structure("PNG", 32, 32, 400),
        ),
        (
            "WebP of 400 frames",
            lambda: encoded(frames(400)[0], "WEBP", save_all=True, append_images=frames(400)[1:]),
            Structure("WEBP", 32, 32, 400),
        ),
        (
            "PNG with ICC, text, XMP and EXIF",
            lambda: encoded(
                picture(),
                "PNG",
                icc_profile=icc_profile(500_000),
                exif=exif_with_maker_note(bytes(30_000)),
                pnginfo=_png_text(),
            ),
            Structure("PNG", 64, 48, 1),
        ),
        (
            "WebP with ICC, EXIF and XMP",
            lambda: encoded(
                picture(),
                "WEBP",
                icc_profile=icc_profile(500_000),
                exif=exif_with_maker_note(bytes(30_000)),
                xmp=b"<x:xmpmeta/>" * 1000,
            ),
            Structure("WEBP", 64, 48, 1),
        ),
        (
            "AVIF with ICC, EXIF and XMP",
            lambda: encoded(
                picture(),
                "AVIF",
                icc_profile=icc_profile(500_000),
                exif=exif_with_maker_note(bytes(30_000)),
                xmp=b"<x:xmpmeta/>" * 1000,
            ),
            Structure("AVIF", 64, 48, 1),
        ),
    ],
)
def test_real_world_like_file_passes(
    name: str, build: Callable[[], bytes], expected: Structure
) -> None:
    assert prescan(build()) == expected


def _png_text() -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "made by a camera " * 100)
    info.add_text("Description", "compressed " * 2000, zip=True)
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta/>" * 500)
    return info


def test_cut_files_are_never_too_complex(corpus: Corpus) -> None:
    """Every prefix (at a stride) of legitimate files: what was read stands, nothing raised."""
    seeds = [corpus(n) for n in ("exif_orientation_6.jpg", "anim_pan.gif", "anim_coffee.apng")]
    seeds += [corpus(n) for n in ("anim_cat.webp", "modern_astronaut.avif", "modern_coffee.heic")]
    seeds += [phone_jpeg()[:400_000]]
    for data in seeds:
        for end in range(0, len(data), max(1, len(data) // 2000)):
            prescan(data[:end])


def test_damaged_bytes_give_a_structure_or_too_complex(corpus: Corpus) -> None:
    rng = random.Random(10)
    seeds = [corpus(n) for n in ("exif_orientation_6.jpg", "anim_pan.gif", "anim_coffee.apng")]
    seeds += [corpus(n) for n in ("anim_cat.webp", "modern_astronaut.avif", "modern_coffee.heic")]
    formats_seen = set()
    for _ in range(3000):
        blob = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            blob[rng.randrange(min(len(blob), 2000))] = rng.randrange(256)
        with contextlib.suppress(TooComplex):
            formats_seen.add(prescan(bytes(blob[: rng.randrange(1, len(blob) + 1)])).format)
    assert {"JPEG", "GIF", "PNG", "WEBP", "AVIF", "HEIF", None} <= formats_seen


def test_memoryview_input_is_read_in_place() -> None:
    data = encoded(picture(), "PNG")
    assert prescan(memoryview(data)) == prescan(data) == Structure("PNG", 64, 48, 1)


# ----------------------------------------------------------------------------- both services


def test_header_check_off_the_loop_gives_the_same_answers(corpus: Corpus) -> None:
    async def both() -> None:
        data = corpus("geom_64x64.png")
        assert await probe_off_loop(data, DEFAULTS) == probe(data)
        with pytest.raises(ImageRejected, match="TOO_COMPLEX"):
            await probe_off_loop(hostile.gif_extension_flood(LIMIT), DEFAULTS)

    asyncio.run(both())


@pytest.mark.parametrize("case", hostile.HOSTILE, ids=[h.name for h in hostile.HOSTILE])
def test_header_checks_and_render_refuse_hostile_files_as_too_complex(
    case: hostile.Hostile,
) -> None:
    data = case.build(LIMIT)
    for check in (formats.measure, probe, render):
        with pytest.raises(ImageRejected) as refused:
            check(data)
        assert refused.value.code == "TOO_COMPLEX"
        assert refused.value.reason.startswith(("more than", "the "))
        assert pickle.loads(pickle.dumps(refused.value)).code == "TOO_COMPLEX"


def test_measure_gives_the_header_size_without_pillow(ok_entry: Entry, corpus: Corpus) -> None:
    structure = formats.measure(corpus(ok_entry["name"]))
    assert [structure.width, structure.height] == ok_entry["size"]
    assert structure.megapixels == ok_entry["size"][0] * ok_entry["size"][1] / 1e6
    if "codec" not in ok_entry or codec_available(ok_entry):
        assert structure.megapixels == probe(corpus(ok_entry["name"])).megapixels


def test_measure_refuses_only_what_it_can_tell(corpus: Corpus) -> None:
    for data, code in (
        (b"", "EMPTY"),
        (bytes(LIMIT + 1), "TOO_LARGE"),
        (corpus("bomb_png_20000x20000.png"), "TOO_MANY_PIXELS"),
        (corpus("bomb_gif_screen_30000x30000.gif"), "TOO_MANY_PIXELS"),
    ):
        with pytest.raises(ImageRejected) as refused:
            formats.measure(data)
        assert refused.value.code == code
    for name in ("bad_plain_text.jpg", "bad_truncated_50pct.jpg", "bad_vector.svg"):
        formats.measure(corpus(name))  # the render process gives these their verdict
    assert formats.measure(b"not an image") == Structure(None, 0, 0, 0)


def test_the_fast_marker_search_finds_what_the_translated_one_finds() -> None:
    """The scans' marker search (a regex on the buffer) against the translated windows, on
    buffers full of FF, stuffing, restart markers and real markers."""
    rng = random.Random(7)
    alphabet = [0xFF] * 6 + [0x00] * 3 + [*range(0xD0, 0xD8), 0xD9, 0xDA, 0xC4, 0x01, 0xE1]
    for _ in range(2000):
        size = rng.randint(2, 3000)
        data = bytes(
            rng.choice(alphabet) if rng.random() < 0.5 else rng.randrange(256) for _ in range(size)
        )
        view, start = memoryview(data), rng.randrange(size)
        assert jpeg._MarkerFinder().next(view, start, size) == jpeg._next_marker(view, start, size)


def test_a_scan_dense_with_ff_is_searched_the_translated_way() -> None:
    """FF 00 pairs cost the regex 8 ns each: a crafted scan of them must not."""
    data = b"\xff\x00" * (4 * 1024 * 1024) + b"\xff\xd9"
    finder = jpeg._MarkerFinder()
    assert finder.next(memoryview(data), 0, len(data)) == len(data) - 2
    assert not finder._fast
