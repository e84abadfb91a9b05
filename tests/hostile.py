"""Hostile uploads, built in code at a target size (each in well under a second at 20 MiB).

Every factory takes a size in bytes and returns a file of at most that size (or of the smallest
size that still holds the attack, if larger) that a structural pre-scan must refuse with
TOO_COMPLEX under the default ``ScanLimits`` once ``size`` is past ``min_size`` (a few classes,
such as an oversized ICC profile, are only hostile past the 8 MiB metadata limit). ``HOSTILE``
lists them for parametrising; ``SCAN_WORST_CASES`` are legal files shaped to cost the pre-scan
the most, which it must accept.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from PIL import Image, ImageCms

MIB = 1024 * 1024
Factory = Callable[[int], bytes]


@dataclass(frozen=True)
class Hostile:
    name: str
    build: Factory
    min_size: int = 0  # below it, the file is within the default limits


# ----------------------------------------------------------------------------- building blocks


@cache
def _encoded(fmt: str, size: tuple[int, int] = (16, 16), **options: object) -> bytes:
    img = Image.radial_gradient("L").resize(size).convert("RGB")
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def _small_jpeg() -> bytes:
    return _encoded("JPEG")


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_parts() -> tuple[bytes, bytes]:
    """A small PNG split after IHDR: (signature + IHDR, the rest)."""
    png = _encoded("PNG")
    ihdr_end = 8 + 8 + 13 + 4
    return png[:ihdr_end], png[ihdr_end:]


def _count(size: int, fixed: int, unit: int, at_least: int = 1) -> int:
    return max(at_least, (size - fixed) // unit)


def _pad(data: bytes, size: int) -> bytes:
    """Zeros after the end of the image, which decoders ignore."""
    return data + bytes(max(0, size - len(data)))


def _tiff(entries: list[tuple[int, int, int, int]], next_ifd: int, tail: bytes = b"") -> bytes:
    """A little-endian TIFF block: IFD0 at offset 8 with ``entries`` (tag, type, count,
    value or offset), then ``tail``."""
    ifd = struct.pack("<H", len(entries))
    ifd += b"".join(struct.pack("<HHII", *entry) for entry in entries)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", next_ifd) + tail


def _jpeg_with_app(marker: int, payloads: list[bytes]) -> bytes:
    jpeg = _small_jpeg()
    return jpeg[:2] + b"".join(_segment(marker, p) for p in payloads) + jpeg[2:]


# ----------------------------------------------------------------------------- JPEG


def jpeg_app_flood(size: int) -> bytes:
    """The issue's 19 MiB attack: an ordinary small JPEG after millions of empty APP1
    segments."""
    jpeg = _small_jpeg()
    return jpeg[:2] + b"\xff\xe1\x00\x02" * _count(size, len(jpeg), 4) + jpeg[2:]


def jpeg_com_flood(size: int) -> bytes:
    jpeg = _small_jpeg()
    return jpeg[:2] + _segment(0xFE, b"x") * _count(size, len(jpeg), 5) + jpeg[2:]


def jpeg_stray_bytes(size: int) -> bytes:
    """Junk after the first segment, which Pillow skips one byte at a time."""
    jpeg = _small_jpeg()
    first = 4 + struct.unpack_from(">H", jpeg, 4)[0]
    return jpeg[:first] + bytes(_count(size, len(jpeg), 1)) + jpeg[first:]


@cache
def _progressive_parts() -> tuple[bytes, bytes]:
    """A flat 1024 px progressive JPEG cut before its last scan (the Y AC refinement, with the
    Huffman table before it), and that scan: 34 bytes that make the decoder visit all 16,384
    blocks again."""
    out = io.BytesIO()
    Image.new("RGB", (1024, 1024), (120, 130, 140)).save(out, "JPEG", progressive=True)
    jpeg = out.getvalue()
    last_sos = jpeg.rindex(b"\xff\xda")
    start = jpeg.rindex(b"\xff\xc4", 0, last_sos)
    return jpeg[:start], jpeg[start:-2]


def jpeg_progressive_bomb(size: int) -> bytes:
    """The issue's render bomb: one AC scan repeated thousands of times (at 1.2 MB, 35,000)."""
    head, scan = _progressive_parts()
    return head + scan * _count(size, len(head) + 2, len(scan), 200) + b"\xff\xd9"


def exif_ifd_loop(size: int) -> bytes:
    """EXIF whose IFD0 links to an EXIF directory whose next directory is IFD0 again."""
    exif_ifd = 8 + 2 + 12 + 4
    tiff = _tiff([(0x8769, 4, 1, exif_ifd)], 0)
    tiff += struct.pack("<H", 1) + struct.pack("<HHII", 0x9000, 7, 4, 0x30333230)
    tiff += struct.pack("<I", 8)
    return _pad(_jpeg_with_app(0xE1, [b"Exif\0\0" + tiff]), size)


def exif_overlapping_values(size: int) -> bytes:
    """One 64 KB EXIF segment whose 500 entries all point at the same 58,000-byte value:
    Pillow would copy 29 MB out of it while opening the file."""
    value, count = 58_000, 500
    data_at = 8 + 2 + 12 * count + 4
    entries = [(0xC000 + i, 7, value, data_at) for i in range(count)]
    return _pad(_jpeg_with_app(0xE1, [b"Exif\0\0" + _tiff(entries, 0, bytes(value))]), size)


def exif_oversized(size: int) -> bytes:
    """A PNG whose eXIf chunk (one maker-note-like value) fills the file."""
    head, rest = _png_parts()
    value = max(0, size - len(head) - len(rest) - 12 - 30)
    tiff = _tiff([(0x927C, 7, value, 26)], 0, bytes(value))
    return head + _chunk(b"eXIf", tiff) + rest


@cache
def _icc_header() -> bytes:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return bytes(profile)


def icc_oversized(size: int) -> bytes:
    """A JPEG whose ICC profile, split over APP2 segments as the ICC spec says, fills it."""
    per_segment = 65_519  # 65,533 bytes of payload less "ICC_PROFILE\0" and two counters
    overhead = 4 + 14  # marker, length, signature, counters
    total = size - len(_small_jpeg()) - overhead * (size // per_segment + 1)
    total = max(len(_icc_header()), total)
    profile = struct.pack(">I", total) + _icc_header()[4:] + bytes(total - len(_icc_header()))
    parts = [profile[i : i + per_segment] for i in range(0, len(profile), per_segment)]
    if len(parts) > 255:  # the sequence counters are bytes
        parts = parts[:255]
    payloads = [b"ICC_PROFILE\0" + bytes([i + 1, len(parts)]) + p for i, p in enumerate(parts)]
    return _jpeg_with_app(0xE2, payloads)


# ----------------------------------------------------------------------------- PNG


def png_chunk_flood(size: int) -> bytes:
    """Millions of empty private chunks between IHDR and IDAT."""
    head, rest = _png_parts()
    return head + _chunk(b"prVt", b"") * _count(size, len(head) + len(rest), 12) + rest


def png_trailing_chunk_flood(size: int) -> bytes:
    """The same after the image data, where Pillow's decoder walks them after decoding."""
    png = _encoded("PNG")
    iend = png.rindex(b"IEND") - 4
    return png[:iend] + _chunk(b"prVt", b"") * _count(size, len(png), 12) + png[iend:]


def png_text_bomb(size: int) -> bytes:
    """zTXt chunks of 1 KB that each inflate to 1 MiB (Pillow's limit per chunk)."""
    head, rest = _png_parts()
    text = _chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b" " * (MIB - 1), 9))
    return head + text * _count(size, len(head) + len(rest), len(text), 16) + rest


def apng_many_frames(size: int) -> bytes:
    """An APNG of 8x8 frames, as many as fit."""
    noise = hashlib.shake_256(b"apng").digest(8 * 24)
    frame = zlib.compress(b"".join(b"\x00" + noise[y * 24 : y * 24 + 24] for y in range(8)))
    fixed, per_frame = 8 + 25 + 20 + 38 + 12 + len(frame) + 12, 38 + 16 + len(frame)
    frames = _count(size, fixed, per_frame, 4_000)
    out = [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))]
    out.append(_chunk(b"acTL", struct.pack(">II", frames, 0)))
    control = struct.Struct(">IIIIIHHBB")
    for i in range(frames):
        out.append(_chunk(b"fcTL", control.pack(max(0, 2 * i - 1), 8, 8, 0, 0, 1, 30, 0, 0)))
        if i == 0:
            out.append(_chunk(b"IDAT", frame))
        else:
            out.append(_chunk(b"fdAT", struct.pack(">I", 2 * i) + frame))
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)


# ----------------------------------------------------------------------------- GIF


def _gif_parts() -> tuple[bytes, bytes]:
    """A small GIF split after its global colour table: (header, the rest)."""
    gif = _encoded("GIF")
    table = 3 << ((gif[10] & 7) + 1) if gif[10] & 0x80 else 0
    return gif[: 13 + table], gif[13 + table :]


# A graphic control extension, then a 1x1 frame: LZW codes clear, 0, end in one sub-block.
_GIF_FRAME = (
    b"\x21\xf9\x04\x00\x01\x00\x00\x00"
    + b"\x2c"
    + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
    + b"\x02\x02\x44\x01\x00"
)


def gif_extension_flood(size: int) -> bytes:
    """Millions of one-byte comment extensions before the first frame."""
    head, rest = _gif_parts()
    return head + b"\x21\xfe\x01x\x00" * _count(size, len(head) + len(rest), 5) + rest


def gif_sub_block_flood(size: int) -> bytes:
    """One comment of millions of one-byte sub-blocks, which Pillow reads one at a time."""
    head, rest = _gif_parts()
    blocks = b"\x01x" * _count(size, len(head) + len(rest) + 3, 2)
    return head + b"\x21\xfe" + blocks + b"\x00" + rest


def gif_many_frames(size: int) -> bytes:
    """A 1x1 frame (with its graphic control extension) repeated as often as fits."""
    head, rest = _gif_parts()
    frame = _GIF_FRAME
    return head + frame * _count(size, len(head) + len(rest), len(frame), 4_000) + rest


# ----------------------------------------------------------------------------- WebP and ISO-BMFF


def _riff(chunks: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


def _riff_chunk(kind: bytes, data: bytes) -> bytes:
    return kind + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1)


@cache
def _vp8l() -> bytes:
    """The VP8L chunk of a 16x16 lossless WebP."""
    webp = _encoded("WEBP", lossless=True)
    at = webp.index(b"VP8L")
    return webp[at:]


def _vp8x(flags: int) -> bytes:
    return _riff_chunk(b"VP8X", bytes([flags, 0, 0, 0]) + (15).to_bytes(3, "little") * 2)


def webp_chunk_flood(size: int) -> bytes:
    """Millions of empty unknown chunks before the image (legal in the extended format)."""
    head, tail = _vp8x(0), _vp8l()
    return _riff(head + b"JUNK\0\0\0\0" * _count(size, 12 + len(head) + len(tail), 8) + tail)


def webp_many_frames(size: int) -> bytes:
    """An animated WebP of 16x16 frames, as many as fit."""
    anim = _riff_chunk(b"ANIM", bytes(6))
    header = bytes(6) + (15).to_bytes(3, "little") * 2 + (100).to_bytes(3, "little") + b"\x02"
    frame = _riff_chunk(b"ANMF", header + _vp8l())
    frames = _count(size, 12 + 18 + len(anim), len(frame), 4_000)
    return _riff(_vp8x(0x02) + anim + frame * frames)


@cache
def _avif() -> bytes:
    return _encoded("AVIF")


def avif_box_flood(size: int) -> bytes:
    """Millions of empty top-level ``free`` boxes after the image."""
    avif = _avif()
    return avif + b"\0\0\0\x08free" * _count(size, len(avif), 8)


def avif_property_flood(size: int) -> bytes:
    """Millions of boxes inside the item property container (``ipco``), with the enclosing
    box sizes and the item locations moved to match."""
    avif = _avif()
    boxes = b"\0\0\0\x08free" * _count(size, len(avif), 8)
    return _insert_in_box(avif, (b"meta", b"iprp", b"ipco"), boxes)


def _insert_in_box(avif: bytes, path: tuple[bytes, ...], extra: bytes) -> bytes:
    """``extra`` at the end of the box at ``path``; sizes and iloc offsets corrected."""
    out = bytearray(avif)
    end = _grow_boxes(out, path, len(extra))
    _shift_iloc(out, _find_box(out, b"iloc"), end, len(extra))
    return bytes(out[:end]) + extra + bytes(out[end:])


# Where a box's children start: after the size and type, and a full box's version and flags
# (plus iinf's entry count, version 0).
_CHILDREN_AT = {b"meta": 12, b"iinf": 14}


def _grow_boxes(out: bytearray, path: tuple[bytes, ...], grow: int) -> int:
    """Makes each box on ``path`` (the first of its kind at each level) ``grow`` bytes larger;
    returns where the last one ended, i.e. where the ``grow`` bytes go."""
    start, end, enclosing = 0, len(out), []
    for kind in path:
        pos = start
        while pos < end:
            box_size, box_kind = struct.unpack_from(">I4s", out, pos)
            if box_kind == kind:
                enclosing.append(pos)
                start, end = pos + _CHILDREN_AT.get(kind, 8), pos + box_size
                break
            pos += box_size
    for box in enclosing:
        struct.pack_into(">I", out, box, struct.unpack_from(">I", out, box)[0] + grow)
    return end


def _find_box(data: bytearray, kind: bytes) -> int:
    return data.index(kind) - 4


def _shift_iloc(data: bytearray, iloc: int, after: int, delta: int) -> None:
    """Moves the extents of iloc (version 0 or 1, 4-byte offsets, no base offset) that start
    at or after ``after`` by ``delta``."""
    version = data[iloc + 8]
    sizes = data[iloc + 12]
    assert sizes >> 4 == 4 and data[iloc + 13] >> 4 == 0, "libavif writes 4-byte offsets"
    length_size, pos = sizes & 15, iloc + 14
    items = struct.unpack_from(">H", data, pos)[0]
    pos += 2
    for _ in range(items):
        pos += 2 + (2 if version else 0) + 2  # item id, construction method, data reference
        extents = struct.unpack_from(">H", data, pos)[0]
        pos += 2
        for _ in range(extents):
            offset = struct.unpack_from(">I", data, pos)[0]
            if offset >= after:
                struct.pack_into(">I", data, pos, offset + delta)
            pos += 4 + length_size


@cache
def _heif() -> bytes:
    """A 16 px HEIC by pillow_heif (libheif and x265), as an iPhone writes it: meta before mdat."""
    from image_policy.sniff import accepted_formats

    assert "HEIF" in accepted_formats(), "pillow_heif registers Pillow's HEIF encoder"
    return _encoded("HEIF")


def heif_box_flood(size: int) -> bytes:
    """Millions of empty top-level ``free`` boxes after the image."""
    heif = _heif()
    return heif + b"\0\0\0\x08free" * _count(size, len(heif), 8)


def heif_item_flood(size: int) -> bytes:
    """Millions of item entries (``infe``, version 2, type ``hvc1``) in the item table, which
    libheif reads into one object each when it opens the file; the enclosing box sizes and the
    item locations moved to match (the entry count stays: the scan counts boxes, not it)."""
    heif = _heif()
    entry = struct.pack(">I4sBxxxHH4s", 21, b"infe", 2, 0xFFFF, 0, b"hvc1") + b"\0"
    return _insert_in_heif_box(heif, (b"meta", b"iinf"), entry * _count(size, len(heif), 21))


def _insert_in_heif_box(heif: bytes, path: tuple[bytes, ...], extra: bytes) -> bytes:
    """``extra`` at the end of the box at ``path`` (full boxes: ``meta`` and ``iinf``), sizes
    corrected, and libheif's ``iloc`` (version 0 or 1, 4-byte offsets, lengths and base offsets)
    moved to match."""
    out = bytearray(heif)
    end = _grow_boxes(out, path, len(extra))
    iloc = _find_box(out, b"iloc")
    version, sizes = out[iloc + 8], out[iloc + 12 : iloc + 14]
    assert sizes == b"\x44\x40", "libheif writes 4-byte offsets, lengths and base offsets"
    pos = iloc + 16
    for _ in range(struct.unpack_from(">H", out, iloc + 14)[0]):
        pos += 2 + (2 if version else 0) + 2  # item id, construction method, data reference
        base = struct.unpack_from(">I", out, pos)[0]
        if base >= end:
            struct.pack_into(">I", out, pos, base + len(extra))
        extents = struct.unpack_from(">H", out, pos + 4)[0]
        pos += 6
        for _ in range(extents):
            offset = struct.unpack_from(">I", out, pos)[0]
            if base == 0 and offset >= end:
                struct.pack_into(">I", out, pos, offset + len(extra))
            pos += 8
    return bytes(out[:end]) + extra + bytes(out[end:])


# ----------------------------------------------------------------------------- the lists

HOSTILE: list[Hostile] = [
    Hostile("jpeg_app_flood", jpeg_app_flood),
    Hostile("jpeg_com_flood", jpeg_com_flood),
    Hostile("jpeg_stray_bytes", jpeg_stray_bytes),
    Hostile("jpeg_progressive_bomb", jpeg_progressive_bomb),
    Hostile("exif_ifd_loop", exif_ifd_loop),
    Hostile("exif_overlapping_values", exif_overlapping_values),
    Hostile("exif_oversized", exif_oversized, min_size=8 * MIB + 1024),
    Hostile("icc_oversized", icc_oversized, min_size=8 * MIB + 64 * 1024),
    Hostile("png_chunk_flood", png_chunk_flood),
    Hostile("png_trailing_chunk_flood", png_trailing_chunk_flood),
    Hostile("png_text_bomb", png_text_bomb),
    Hostile("apng_many_frames", apng_many_frames),
    Hostile("gif_extension_flood", gif_extension_flood),
    Hostile("gif_sub_block_flood", gif_sub_block_flood),
    Hostile("gif_many_frames", gif_many_frames),
    Hostile("webp_chunk_flood", webp_chunk_flood),
    Hostile("webp_many_frames", webp_many_frames),
    Hostile("avif_box_flood", avif_box_flood),
    Hostile("avif_property_flood", avif_property_flood),
    Hostile("heif_box_flood", heif_box_flood),
    Hostile("heif_item_flood", heif_item_flood),
]
HOSTILE_FACTORIES: list[tuple[str, Factory]] = [(h.name, h.build) for h in HOSTILE]


# ----------------------------------------------------------------------------- worst cases


def _first_scan_end(jpeg: bytes) -> int:
    sos = jpeg.index(b"\xff\xda")
    return sos + 2 + struct.unpack_from(">H", jpeg, sos + 2)[0]


def jpeg_stuffed_scan(size: int) -> bytes:
    """One scan of FF 00 pairs (stuffed FF bytes): an FF every other byte."""
    jpeg = _small_jpeg()
    head = jpeg[: _first_scan_end(jpeg)]
    return head + b"\xff\x00" * _count(size, len(head) + 2, 2) + b"\xff\xd9"


def jpeg_fill_scan(size: int) -> bytes:
    """One scan of FF fill bytes before EOI."""
    jpeg = _small_jpeg()
    head = jpeg[: _first_scan_end(jpeg)]
    return head + b"\xff" * _count(size, len(head) + 1, 1) + b"\xd9"


def jpeg_at_every_limit(size: int) -> bytes:
    """Just under every cap at once: 990 header segments, an EXIF of 900 entries, 99 scans with
    9 comments before each, and FF 00 pairs for the rest."""
    jpeg = _small_jpeg()
    exif = _tiff([(0xC000 + i, 3, 1, 1) for i in range(900)], 0)
    head = jpeg[:2] + _segment(0xE1, b"Exif\0\0" + exif) + b"\xff\xe1\x00\x02" * 990
    head += jpeg[2 : _first_scan_end(jpeg)]
    sos = jpeg[jpeg.index(b"\xff\xda") : _first_scan_end(jpeg)]
    between = _segment(0xFE, b"x") * 9 + sos
    stuffing = max(2, (size - len(head) - 98 * len(between) - 2) // 99 // 2 * 2)
    scan = b"\xff\x00" * (stuffing // 2)
    return head + scan + (between + scan) * 98 + b"\xff\xd9"


def png_at_every_limit(size: int) -> bytes:
    """990 chunks before the image data, an eXIf of 900 entries, 17,000 IDAT chunks, and one
    large chunk for the rest."""
    head, rest = _png_parts()
    exif = _chunk(b"eXIf", _tiff([(0xC000 + i, 3, 1, 1) for i in range(900)], 0))
    iend = rest.rindex(b"IEND") - 4
    image = rest[:iend] + _chunk(b"IDAT", b"") * 17_000
    fixed = len(head) + len(exif) + 990 * 12 + len(image) + 12 + 12
    filler = _chunk(b"prVt", bytes(max(0, size - fixed)))
    return head + _chunk(b"prVt", b"") * 990 + exif + image + filler + rest[iend:]


def png_text_at_every_limit(size: int) -> bytes:
    """990 text chunks before the image data and 17,000 after it, and ImageMagick's hex EXIF
    text inflating to 1 MiB (the most Pillow reads), which the pre-scan decodes."""
    head, rest = _png_parts()
    iend = rest.rindex(b"IEND") - 4
    tiff = _tiff([(0x010F, 2, 4, 0x41424300)], 0, bytes(520_000))
    lines = "\n".join(tiff[i : i + 36].hex() for i in range(0, len(tiff), 36))
    text = f"\nexif\n{len(tiff):8d}\n{lines}\n".encode()[: MIB - 1]
    raw = _chunk(b"zTXt", b"Raw profile type exif\0\0" + zlib.compress(text, 9))
    before = _chunk(b"tEXt", b"Comment\0x") * 990
    after = _chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0en\0\0<x/>") * 17_000
    fixed = len(head) + len(before) + len(raw) + len(rest) + len(after) + 12
    filler = _chunk(b"prVt", bytes(max(0, size - fixed)))
    return head + before + raw + rest[:iend] + after + filler + rest[iend:]


def gif_at_every_limit(size: int) -> bytes:
    """990 comments before the first frame, 2,000 frames, and a last frame whose image data
    (255-byte sub-blocks) fills the rest."""
    head, rest = _gif_parts()
    comments = b"\x21\xfe\x01x\x00" * 990
    last = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x08"
    fixed = len(head) + len(comments) + 2_000 * len(_GIF_FRAME) + len(last) + 2 + len(rest)
    data = (b"\xff" + bytes(255)) * max(0, (size - fixed) // 256) + b"\x00"
    return head + comments + _GIF_FRAME * 2_000 + last + data + rest


def webp_at_every_limit(size: int) -> bytes:
    """990 chunks before the image, 2,990 frames, 15,000 chunks after them and one large one."""
    anim = _riff_chunk(b"ANIM", bytes(6))
    header = bytes(6) + (15).to_bytes(3, "little") * 2 + (100).to_bytes(3, "little") + b"\x02"
    frames = _riff_chunk(b"ANMF", header + _vp8l()) * 2_990
    chunks = _vp8x(0x02) + b"JUNK\0\0\0\0" * 990 + anim + frames + b"JUNK\0\0\0\0" * 15_000
    return _riff(chunks + _riff_chunk(b"JUNK", bytes(max(0, size - len(chunks) - 20))))


def avif_at_every_limit(size: int) -> bytes:
    """950 top-level boxes after the image, and a large one."""
    avif = _avif() + b"\0\0\0\x08free" * 950
    return (
        avif + struct.pack(">I", max(8, size - len(avif))) + b"free" + bytes(size - len(avif) - 8)
    )


def _box(kind: bytes, payload: bytes, full: bool = False) -> bytes:
    payload = bytes(4) + payload if full else payload
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def heif_item_tables(size: int) -> bytes:
    """A HEIF whose item tables hold as many entries as the caps allow: 9,000 locations and
    9,000 property associations, the primary item (an EXIF item too) last in both, so that the
    pre-scan reads them all (no image data: only its cost is of interest)."""
    items = 9_000
    location = struct.Struct(">HHHII")  # id, data reference, extent count, offset, length
    iloc = struct.pack(">BBH", 0x44, 0x00, items)
    iloc += b"".join(location.pack(i + 1, 0, 1, 0, 0) for i in range(items))
    ipma = struct.pack(">I", items)
    ipma += b"".join(struct.pack(">HBB", i + 1, 1, 1) for i in range(items))
    ipco = _box(b"ipco", _box(b"ispe", struct.pack(">II", 64, 64), full=True))
    infe = _box(b"infe", b"\x02\0\0\0" + struct.pack(">HH", items, 0) + b"Exif\0")
    meta = _box(b"pitm", struct.pack(">H", items), full=True) + _box(b"iloc", iloc, full=True)
    meta += _box(b"iinf", struct.pack(">H", 1) + infe, full=True)
    meta += _box(b"iprp", ipco + _box(b"ipma", ipma, full=True))
    head = _box(b"ftyp", b"heic\0\0\0\0mif1heic") + _box(b"meta", meta, full=True)
    return head + _box(b"mdat", bytes(max(0, size - len(head) - 8)))


SCAN_WORST_CASES: list[tuple[str, Factory]] = [
    ("jpeg_stuffed_scan", jpeg_stuffed_scan),
    ("jpeg_fill_scan", jpeg_fill_scan),
    ("jpeg_at_every_limit", jpeg_at_every_limit),
    ("png_at_every_limit", png_at_every_limit),
    ("png_text_at_every_limit", png_text_at_every_limit),
    ("gif_at_every_limit", gif_at_every_limit),
    ("webp_at_every_limit", webp_at_every_limit),
    ("avif_at_every_limit", avif_at_every_limit),
    ("heif_item_tables", heif_item_tables),
]
