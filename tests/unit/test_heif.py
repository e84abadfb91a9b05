"""HEIC/HEIF through pillow_heif: the ISO-BMFF pre-scan's caps and its size from the header
(``ispe``, a grid's output) before libheif sees a byte, cut files, the opener registered for
HEIF alone, and the orientation applied once."""

from __future__ import annotations

import io
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pillow_heif
import pytest
from PIL import Image

from image_policy import formats
from image_policy.formats import ImageInfo, ImageRejected, Limits, probe
from image_policy.prescan import ScanLimits, Structure, TooComplex, prescan
from image_policy.sniff import accepted_formats
from imaging_service import render as render_module
from imaging_service.render import render
from tests import hostile

RED, BLUE = (220, 20, 20), (20, 20, 220)
MIB = 1024 * 1024
DEFAULTS = Limits()


def heic(img: Image.Image, orientation: int = 1, **options: object) -> bytes:
    """``img`` saved by pillow_heif (libheif and x265), with an EXIF orientation if not 1:
    pillow_heif then writes it as the HEIF transforms too (``irot``, ``imir``), as iPhones do."""
    assert "HEIF" in accepted_formats()
    exif = Image.Exif()
    exif[0x010F] = "Apple"
    if orientation != 1:
        exif[0x0112] = orientation
    out = io.BytesIO()
    img.save(out, "HEIF", exif=exif.tobytes(), quality=90, **options)
    return out.getvalue()


def red_over_blue(size: tuple[int, int] = (96, 128)) -> Image.Image:
    """Upright: the top half red, the bottom half blue."""
    width, height = size
    img = Image.new("RGB", size, RED)
    img.paste(BLUE, (0, height // 2, width, height))
    return img


def iphone_style(size: tuple[int, int] = (96, 128), tile: int = 64) -> bytes:
    """``red_over_blue`` as a phone held upright stores it: the sensor's landscape pixels, a
    grid of tiles, EXIF orientation 6 and the matching ``irot``."""
    stored = red_over_blue(size).transpose(Image.Transpose.ROTATE_90)
    return heic(stored, orientation=6, tile_size=tile)


def pixel(img: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = img.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def boxes(data: bytes | bytearray, pos: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, start, end) of the boxes in ``[pos, end)`` (32-bit sizes: what libheif writes)."""
    while pos < end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        yield kind, pos, pos + size
        pos += size


def box(data: bytes | bytearray, *path: bytes) -> tuple[int, int]:
    """(start, end) of the box at ``path``: ``meta``, ``iinf`` and full boxes handled."""
    start, end = 0, len(data)
    for kind in path:
        start, end = next((s, e) for k, s, e in boxes(data, start, end) if k == kind)
        header = {b"meta": 12, b"iinf": 14}.get(kind, 8)
        start, end = start + header, end
    return start, end


def ispe_offsets(data: bytes | bytearray) -> list[int]:
    start, end = box(data, b"meta", b"iprp", b"ipco")
    return [s + 12 for kind, s, _ in boxes(data, start, end) if kind == b"ispe"]


def counted_boxes(data: bytes) -> int:
    """The boxes the pre-scan counts before the first frame, counted here independently."""
    count = sum(1 for _ in boxes(data, 0, len(data)))
    for path in ((b"meta",), (b"meta", b"iinf"), (b"meta", b"iprp"), (b"meta", b"iprp", b"ipco")):
        count += sum(1 for _ in boxes(data, *box(data, *path)))
    return count


def refused(data: bytes, limits: Limits = DEFAULTS) -> ImageRejected:
    with pytest.raises(ImageRejected) as caught:
        probe(data, limits)
    return caught.value


@pytest.fixture
def heif_never_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    """pillow_heif's opener fails the test if it is reached."""

    def opened(self: object) -> None:
        raise AssertionError("libheif was given the file")

    monkeypatch.setattr(pillow_heif.as_plugin.HeifImageFile, "_open", opened)


# ----------------------------------------------------------------------------- what is accepted


def test_an_iphone_style_heic_is_accepted_and_its_size_is_upright() -> None:
    data = iphone_style()
    assert probe(data) == ImageInfo("HEIF", "image/heif", 96, 128)  # irot applied by libheif
    assert prescan(data) == Structure("HEIF", 128, 96, 1)  # ispe: the pixels as stored
    assert formats.measure(data).megapixels == 96 * 128 / 1_000_000


def test_an_iphone_style_heic_renders_upright_once() -> None:
    """Red above blue at both sides of the centre: not left as stored (red left of blue), nor
    turned twice (blue above red)."""
    thumbnail = Image.open(io.BytesIO(render(iphone_style(), (64,))[0].png))
    for x in (20, 44):
        top, bottom = pixel(thumbnail, (x, 16)), pixel(thumbnail, (x, 48))
        assert max(abs(a - b) for a, b in zip(top[:3], RED, strict=True)) < 12, top
        assert max(abs(a - b) for a, b in zip(bottom[:3], BLUE, strict=True)) < 12, bottom


def test_an_exif_orientation_without_heif_transforms_is_not_applied() -> None:
    """In HEIF the transforms are the file's ``irot``/``imir``, which libheif applies; an EXIF
    orientation repeats them for other readers. Alone it turns nothing, as in Apple's and
    libheif's viewers."""
    exif = Image.Exif()
    exif[0x0112] = 1
    out = io.BytesIO()
    red_over_blue().save(out, "HEIF", exif=exif.tobytes(), quality=90)
    data = bytearray(out.getvalue())
    upright = struct.pack(">HHIH", 0x0112, 3, 1, 1)  # the tag as Pillow writes it, at 1
    at = data.index(upright)
    data[at : at + len(upright)] = struct.pack(">HHIH", 0x0112, 3, 1, 6)
    assert b"irot" not in data
    assert Image.open(io.BytesIO(bytes(data))).info["original_orientation"] == 6
    thumbnail = Image.open(io.BytesIO(render(bytes(data), (64,))[0].png))
    assert pixel(thumbnail, (32, 16))[0] > 180, "turned by the EXIF tag"


def test_the_renderer_never_turns_a_heif_by_its_exif_tag() -> None:
    """pillow_heif sets the tag to 1 at open; were it left at 6, the picture libheif already
    turned must not be turned again."""
    img = Image.open(io.BytesIO(iphone_style()))
    img.getexif()[0x0112] = 6
    assert render_module._upright(img) is img


def test_alpha_survives_and_auxiliary_images_are_not_read() -> None:
    img = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    img.paste((0, 0, 255, 255), (0, 0, 64, 32))
    out = io.BytesIO()
    img.save(out, "HEIF", quality=-1)
    opened = Image.open(io.BytesIO(out.getvalue()))
    assert opened.mode == "RGBA"
    assert opened.info["thumbnails"] == [] and "aux" not in opened.info
    thumbnail = Image.open(io.BytesIO(render(out.getvalue(), (64,))[0].png))
    assert pixel(thumbnail, (32, 10))[2:] == (254, 255) and pixel(thumbnail, (32, 54))[3] == 0


def test_the_corpus_heic_is_accepted(corpus: Callable[[str], bytes]) -> None:
    data = corpus("modern_coffee.heic")
    assert probe(data) == ImageInfo("HEIF", "image/heif", 600, 400)


# ----------------------------------------------------------------------------- the opener


def test_only_heif_is_taken_by_pillow_heif_and_avif_stays_pillows() -> None:
    assert accepted_formats()[-1] == "HEIF"
    assert Image.OPEN["HEIF"][0] is pillow_heif.as_plugin.HeifImageFile
    assert Image.ID.count("HEIF") == 1
    assert (pillow_heif.options.THUMBNAILS, pillow_heif.options.DEPTH_IMAGES) == (False, False)
    assert (pillow_heif.options.AUX_IMAGES, pillow_heif.options.DECODE_THREADS) == (False, 1)
    out = io.BytesIO()
    red_over_blue().save(out, "AVIF")
    avif = Image.open(io.BytesIO(out.getvalue()), formats=accepted_formats())
    assert type(avif).__module__ == "PIL.AvifImagePlugin"


def test_registering_from_many_threads_at_once_registers_once() -> None:
    from image_policy import sniff

    start = threading.Barrier(8)

    def register(_: int) -> bool:
        start.wait()
        return sniff._register_heif()

    with ThreadPoolExecutor(8) as threads:
        assert all(threads.map(register, range(8)))
    assert Image.ID.count("HEIF") == 1
    assert probe(iphone_style()).format == "HEIF"


# ----------------------------------------------------------------------------- pixels from ispe


def test_an_over_limit_ispe_is_refused_before_libheif_sees_the_file(
    heif_never_opened: None,
) -> None:
    data = bytearray(heic(red_over_blue()))
    (ispe,) = ispe_offsets(data)
    struct.pack_into(">II", data, ispe, 10_000, 8_000)
    rejection = refused(bytes(data))
    assert rejection.code == "TOO_MANY_PIXELS"
    assert rejection.reason == "10000x8000 is 80,000,000 pixels, above 50,000,000"
    with pytest.raises(ImageRejected, match="TOO_MANY_PIXELS"):
        render(bytes(data))
    with pytest.raises(ImageRejected, match="TOO_MANY_PIXELS"):
        formats.measure(bytes(data))


def test_the_pixel_limit_from_ispe_is_inclusive(heif_never_opened: None) -> None:
    data = heic(red_over_blue())  # ispe 96x128 (x265 codes it padded to 128x128: clap crops)
    width, height = prescan(data).width, prescan(data).height
    assert refused(data, Limits(max_pixels=width * height - 1)).code == "TOO_MANY_PIXELS"
    assert formats.measure(data, Limits(max_pixels=width * height)).format == "HEIF"


def test_a_grid_larger_than_its_ispe_is_refused_by_the_grid_size(heif_never_opened: None) -> None:
    """libheif allocates a grid's canvas by its payload and compares it with ``ispe`` only
    after decoding the tiles into it: the larger of the two is the size."""
    data = bytearray(heic(Image.new("RGB", (1024, 768), RED), tile_size=256))
    grids = [at for at in ispe_offsets(data) if struct.unpack_from(">II", data, at) == (1024, 768)]
    (grid_ispe,) = grids
    struct.pack_into(">II", data, grid_ispe, 64, 48)
    assert prescan(bytes(data)) == Structure("HEIF", 1024, 768, 1)
    limits = Limits(max_pixels=100_000)
    assert refused(bytes(data), limits).reason == "1024x768 is 786,432 pixels, above 100,000"


# ----------------------------------------------------------------------------- box caps


def test_every_box_before_the_first_frame_counts_and_the_cap_is_inclusive() -> None:
    data = iphone_style()
    count = counted_boxes(data)
    assert prescan(data, ScanLimits(max_segments=count)).format == "HEIF"
    with pytest.raises(TooComplex, match=f"more than {count - 1:,} ISO-BMFF boxes"):
        prescan(data, ScanLimits(max_segments=count - 1))


@pytest.mark.parametrize("build", [hostile.heif_box_flood, hostile.heif_item_flood])
def test_box_floods_are_refused_in_bounded_time(build: hostile.Factory) -> None:
    data = build(20 * MIB)
    started = time.process_time()
    with pytest.raises(TooComplex, match="more than 1,000 ISO-BMFF boxes before the first frame"):
        prescan(data)
    assert time.process_time() - started < 0.5


def test_a_small_item_flood_is_a_valid_file_libheif_opens() -> None:
    """The hostile item flood is a real HEIF: below the cap, it opens and decodes."""
    data = hostile.heif_item_flood(0)
    assert probe(data).format == "HEIF"
    assert len(render(data, (16,))) == 1


def test_boxes_are_walked_to_a_fixed_depth_only() -> None:
    """100,000 boxes nested in each other inside ``ipco`` cost the scan one box: it descends
    only meta, iinf, iprp and ipco (libheif skips an unknown property whole as well)."""
    depth = 100_000
    nested = b"".join(struct.pack(">I4s", 8 * (depth - i), b"free") for i in range(depth))
    data = heic(red_over_blue())
    deep = hostile._insert_in_heif_box(data, (b"meta", b"iprp", b"ipco"), nested)
    count = counted_boxes(data) + 1  # the outermost of the nested boxes
    assert prescan(deep, ScanLimits(max_segments=count)).format == "HEIF"
    assert probe(deep).format == "HEIF"


def test_box_sizes_past_their_parent_or_the_file_are_cut_files() -> None:
    data = bytearray(heic(red_over_blue()))
    meta, _ = box(data, b"meta")
    struct.pack_into(">I", data, meta - 12, 0xFFFF_FFF0)  # meta claims 4 GiB
    assert prescan(bytes(data)).format == "HEIF"  # what was read stands
    assert refused(bytes(data)).code == "TRUNCATED"
    largesize = bytes(data[: meta - 12]) + struct.pack(">I4sQ", 1, b"free", 2**63)
    assert prescan(largesize) == Structure("HEIF", 0, 0, 1)


def test_metadata_past_the_cap_is_too_complex() -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + bytes(9 * MIB)  # a 9 MiB user comment
    out = io.BytesIO()
    red_over_blue().save(out, "HEIF", exif=exif.tobytes())
    with pytest.raises(TooComplex, match="bytes of metadata"):
        prescan(out.getvalue())
    assert prescan(out.getvalue(), ScanLimits(max_metadata_bytes=10 * MIB)).format == "HEIF"


def test_an_exif_loop_in_a_heic_is_too_complex() -> None:
    data = bytearray(heic(red_over_blue()))
    tiff = data.index(b"MM\x00*")  # Pillow writes EXIF big-endian
    ifd0 = tiff + struct.unpack_from(">I", data, tiff + 4)[0]
    entries = struct.unpack_from(">H", data, ifd0)[0]
    struct.pack_into(">I", data, ifd0 + 2 + 12 * entries, ifd0 - tiff)  # next IFD: itself
    with pytest.raises(TooComplex, match="a loop"):
        prescan(bytes(data))


# ----------------------------------------------------------------------------- cut files


def test_every_cut_of_a_heic_gets_a_clear_code() -> None:
    """libheif decodes a HEIF whose tile data is cut without an error (the picture stops where
    the bytes do): the pre-scan finds item data past the end, and the cut is TRUNCATED."""
    data = iphone_style()
    mdat = data.index(b"mdat") - 4
    codes: dict[str, int] = {}
    for cut in range(1, len(data)):
        try:
            probe(data[:cut])
            render(data[:cut], (16,))
            code = "ACCEPTED"
        except ImageRejected as exc:
            code = exc.code
            if cut > mdat:
                assert exc.reason == "the HEIF file is cut short", exc.reason
        codes[code] = codes.get(code, 0) + 1
    assert set(codes) <= {"TRUNCATED", "NOT_AN_IMAGE"}, codes
    assert codes["TRUNCATED"] > len(data) - 32


def test_a_cut_heic_is_refused_before_libheif_sees_it(heif_never_opened: None) -> None:
    data = iphone_style()
    assert refused(data[:-1]).reason == "the HEIF file is cut short"
