"""Pure thumbnail renderer: uploaded image bytes in, circular RGBA PNG thumbnails out."""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from PIL import ExifTags, Image, ImageChops, ImageCms, ImageDraw, ImageFile
from zlib_ng import zlib_ng as zlib

from image_policy.formats import (
    DECODE_ERRORS,
    ImageInfo,
    ImageRejected,
    Limits,
    open_image,
    pillow_configured,
    probe,
)

__all__ = ["DEFAULT_SIZES", "ImageInfo", "ImageRejected", "Limits", "Thumbnail", "probe", "render"]

DEFAULT_SIZES = (100, 200, 400)
_DEFAULT_LIMITS = Limits()

_Box = tuple[float, float, float, float]

_MASK_SUPERSAMPLING = 4
# With a source more than `gap` x the thumbnail, Pillow first box-reduces by an integer factor
# and then applies LANCZOS: about five times faster on a 5000 px square. RGB and grey pictures
# take a gap of 1.8, which stays as close to a LANCZOS pass over the whole source as 3 does (the
# corpus, tests/unit/test_render.py) and takes 3.4 ms off a 12 MP avatar (5%). The others keep
# 3: dithered ones (bilevel, palette), whose dither box-averaged first moved a 100 px thumbnail
# 3.4 levels away, and CMYK, converted to sRGB after resizing (2.1 levels instead of 1.8).
_REDUCING_GAP = 3.0
_PHOTO_REDUCING_GAP = 1.8
_PHOTO_MODES = frozenset({"L", "LA", "RGB", "RGBA"})

# PNG encoding, chosen with bench/png_choice.py: our 100+200+400 px thumbnails of the 8 bench
# pictures encoded again; KB of an avatar's three PNGs and CPU ms to encode them, one core:
#   Pillow's encoder (it tries all five filters on every row), zlib level 1   370 KB  17.2 ms
#   Pillow's encoder, level 3                                                 359 KB  27.0 ms
#   Pillow's encoder, level 6 (zlib's default)                                344 KB  56.6 ms
#   Pillow's encoder, Z_RLE                                                   353 KB  13.9 ms
#   filter None on every row, level 6 (what sharp writes)                     439 KB  24.8 ms
#   filter Up on every row, Z_RLE                                             378 KB   7.7 ms
#   filter Average on every row, Z_RLE                                        364 KB   8.5 ms
#   filter Average on every row, Z_HUFFMAN_ONLY                               384 KB   8.0 ms
# Half of Pillow's time goes into choosing filters. One filter for every row, computed with
# ImageChops, then Z_RLE (which on filtered photos nearly matches level 3) takes a third of the
# time. Average is 4% smaller than Up for 0.8 ms more: our choice. Black transparent corners
# (see _round) make them 18% smaller than keeping the colour there. The deflate is zlib-ng's
# (the zlib-ng package, the same streams as zlib's): its run-length search takes 3.7 ms for
# an avatar's three PNGs where zlib 1.2.13 takes 6.4 to 7.7, for the same bytes.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_FILTER_AVERAGE = 3
_ZLIB_LEVEL = 6  # Z_RLE ignores the level for the size; 6 is zlib's default
_VISIBLE = [0] + [255] * 255  # point() table: alpha > 0 -> 255

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Formats whose decoder applies the orientation itself (see _upright).
_TRANSFORMED_BY_DECODER = frozenset({"HEIF"})
_WIDE_GREY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_PROFILE_MODES = {"RGB ": "RGB", "GRAY": "L", "CMYK": "CMYK"}


@dataclass(frozen=True)
class Thumbnail:
    """One RGBA PNG of ``size`` x ``size`` pixels."""

    size: int
    png: bytes


def render(
    data: bytes, sizes: Sequence[int] = DEFAULT_SIZES, limits: Limits = _DEFAULT_LIMITS
) -> list[Thumbnail]:
    """Raises ImageRejected for permanent input errors.

    Returns one thumbnail per entry of ``sizes`` (pixels, in that order): the upright first frame,
    centre-cropped to a square, converted to sRGB, resized with LANCZOS (up as well as down) and
    masked to the inscribed circle. A ValueError means bad ``sizes``, never bad data.
    """
    if not sizes or min(sizes) < 1:
        raise ValueError(f"sizes must be positive pixel counts, got {list(sizes)!r}")
    with pillow_configured(limits):
        img = open_image(data, limits)
        _decode(img, max(sizes))
        icc = img.info.get("icc_profile")
        gap = _PHOTO_REDUCING_GAP if img.mode in _PHOTO_MODES else _REDUCING_GAP
        square, box = _centre_square(_upright(img))
        resized = _resized(square, box, sizes, icc if isinstance(icc, bytes) else None, gap)
        return [
            Thumbnail(size, _encode_png(_round(each)))
            for size, each in zip(sizes, resized, strict=True)
        ]


def _decode(img: ImageFile.ImageFile, largest: int) -> None:
    """Decode frame 0 once, a JPEG at the smallest DCT scale (1/1..1/8) whose short side still
    covers ``largest``: asking for a square keeps this true whichever way EXIF turns the axes."""
    try:
        if img.format in ("JPEG", "MPO"):
            img.draft("RGB", (largest, largest))
        img.load()
    except DECODE_ERRORS as exc:
        raise ImageRejected(
            "TRUNCATED", f"the {img.format} data is cut short or corrupt: {exc}"
        ) from exc


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (JPEG APP1 or PNG eXIf) as ``ImageOps.exif_transpose`` would,
    without copying when upright. A missing, out-of-range (e.g. 0) or unreadable tag means upright.

    HEIF is upright as decoded: libheif applies the file's own transforms (``irot``, ``imir``,
    ``clap``), which the format makes the only ones, and an iPhone's EXIF orientation repeats
    them. pillow_heif sets that tag to 1 at open (the original in ``info["original_orientation"]``)
    so that ``exif_transpose`` does nothing; HEIF is skipped here all the same, so that the picture
    is never turned twice whatever pillow_heif does with the tag.
    """
    if img.format in _TRANSFORMED_BY_DECODER:
        return img
    try:
        method = _TRANSPOSE.get(img.getexif().get(ExifTags.Base.Orientation, 1))
    except DECODE_ERRORS:
        return img
    return img if method is None else img.transpose(method)


def _centre_square(img: Image.Image) -> tuple[Image.Image, _Box]:
    """The whole pixels around the centred square, and the square's exact box within them.

    When the sides differ by an odd number the square starts half-way into a pixel; resizing from
    that box centres it exactly, as ``ImageOps.fit`` does.
    """
    width, height = img.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    x0, y0 = int(left), int(top)
    crop = img.crop((x0, y0, math.ceil(left + side), math.ceil(top + side)))
    return crop, (left - x0, top - y0, left - x0 + side, top - y0 + side)


def _resized(
    square: Image.Image, box: _Box, sizes: Sequence[int], icc: bytes | None, gap: float
) -> list[Image.Image]:
    """Each size as 8-bit sRGB, "RGB" when opaque, else "RGBa" (premultiplied).

    Every size is resized from the decoded square itself. Deriving the smaller sizes from the
    largest would save 2 ms (0.3 MP) to 7 ms (12 MP) per avatar, but LANCZOS clips its overshoot
    to 0..255 at each step, and on dithered pictures two steps drift: the 1-bit corpus file's
    100 px thumbnail ends 5 levels away from a direct resize. An opaque picture is converted to
    sRGB after resizing, in fewer pixels (the difference is below rounding); a transparent one
    before, as its colour must not be premultiplied for that.
    """
    if square.has_transparency_data:
        square, icc = _premultiplied_srgb(square, icc), None
    else:
        square = _colour_only(_eight_bit(square))
    return [_to_srgb(_resize(square, size, box, gap), icc) for size in sizes]


def _resize(img: Image.Image, size: int, box: _Box, gap: float) -> Image.Image:
    return img.resize((size, size), Image.Resampling.LANCZOS, box=box, reducing_gap=gap)


def _premultiplied_srgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    """8-bit sRGB "RGBa" (premultiplied), so that resizing never lets the colour hidden under
    fully transparent pixels bleed into visible ones."""
    alpha = img.convert("RGBA").getchannel("A")
    img.info.pop("transparency", None)  # now in ``alpha``; ``img`` is our own crop
    rgb = _to_srgb(_colour_only(_eight_bit(img)), icc)
    rgb.putalpha(alpha)
    return rgb.convert("RGBa")


def _eight_bit(img: Image.Image) -> Image.Image:
    """Scale 16-bit grey to 8 bits (65535 -> 255): Pillow's convert("L") would clip it to white."""
    if img.mode in _WIDE_GREY_MODES:
        return img.convert("I").point(lambda v: v / 257 + 0.5).convert("L")
    if img.mode == "F":
        return img.convert("L")
    return img


def _colour_only(img: Image.Image) -> Image.Image:
    """The colour bands as "L", "RGB" or "CMYK", the modes an ICC profile can describe."""
    if img.mode in ("L", "RGB", "CMYK"):
        return img
    return img.convert("L" if img.mode in ("1", "LA", "La") else "RGB")


def _to_srgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    """RGB in sRGB, through the embedded ICC profile when it describes ``img``'s colour space.

    "RGBa" is already sRGB. A profile that is unreadable or for another colour space is ignored,
    as browsers do, and so is an sRGB profile (converting would change nothing).
    """
    if img.mode == "RGBa":
        return img
    transform = _transform_to_srgb(icc, img.mode) if icc else None
    if transform is not None:
        try:
            return transform.apply(img)
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # an unusable profile is ignored, as above
    return img if img.mode == "RGB" else img.convert("RGB")


@lru_cache(maxsize=8)
def _transform_to_srgb(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    try:
        profile = ImageCms.getOpenProfile(io.BytesIO(icc))
        if _PROFILE_MODES.get(profile.profile.xcolor_space) != mode:
            return None
        if mode == "RGB" and "srgb" in (profile.profile.profile_description or "").lower():
            return None
        return ImageCms.buildTransform(
            profile, _srgb_profile(), mode, "RGB", ImageCms.Intent.RELATIVE_COLORIMETRIC
        )
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


@lru_cache(maxsize=1)
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _round(img: Image.Image) -> Image.Image:
    """RGBA cut to the inscribed circle. Fully transparent pixels are black, which costs nothing
    to a viewer and makes the PNG smaller (the corners are a fifth of the square)."""
    size = img.size[0]
    if img.mode == "RGB":
        out = ImageChops.multiply(img, _inside(size))
        out.putalpha(_circle_mask(size))
        return out
    rgba = img.convert("RGBA")
    alpha = ImageChops.multiply(rgba.getchannel("A"), _circle_mask(size))
    rgba.putalpha(alpha)
    out = Image.new("RGBA", rgba.size)
    out.paste(rgba, mask=alpha.point(_VISIBLE))
    return out


@lru_cache(maxsize=16)
def _circle_mask(size: int) -> Image.Image:
    """Alpha of the disc inscribed in a ``size`` square (diameter = size); do not modify it.

    Drawn at 4x and box-averaged down, so an edge pixel's alpha is the share of it the disc
    covers: an anti-aliased rim about one pixel wide, without the ringing a LANCZOS downscale
    would add just inside the edge.
    """
    big = size * _MASK_SUPERSAMPLING
    canvas = Image.new("L", (big, big), 0)
    ImageDraw.Draw(canvas).ellipse((0, 0, big - 1, big - 1), fill=255)
    return canvas.resize((size, size), Image.Resampling.BOX)


@lru_cache(maxsize=16)
def _inside(size: int) -> Image.Image:
    """RGB, 255 wherever the circle mask is not 0 and 0 elsewhere; do not modify it."""
    return _circle_mask(size).point(_VISIBLE).convert("RGB")


def _encode_png(img: Image.Image) -> bytes:
    """An 8-bit RGBA PNG of ``img`` with IHDR, IDAT and IEND only: no metadata of the source.

    Every row carries the Average filter (see the measurements at the top of the module).
    """
    width, height = img.size
    rows = Image.new("L", (4 * width + 1, height), _PNG_FILTER_AVERAGE)
    rows.paste(Image.frombytes("L", (4 * width, height), _average_filtered(img).tobytes()), (1, 0))
    packer = zlib.compressobj(_ZLIB_LEVEL, zlib.DEFLATED, zlib.MAX_WBITS, 9, zlib.Z_RLE)
    idat = packer.compress(rows.tobytes()) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA, no interlace
    return _PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _average_filtered(img: Image.Image) -> Image.Image:
    """PNG filter 3 for every byte: x - floor((left + above) / 2) modulo 256, where left is the
    same channel of the previous pixel and both are 0 outside the picture."""
    left = Image.new(img.mode, img.size)
    left.paste(img, (1, 0))
    above = Image.new(img.mode, img.size)
    above.paste(img, (0, 1))
    return ImageChops.subtract_modulo(img, ImageChops.add(left, above, scale=2.0))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
