"""Pure thumbnail renderer: uploaded image bytes in, circular RGBA PNG thumbnails out."""

from __future__ import annotations

import importlib
import io
import math
import struct
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

from PIL import (
    ExifTags,
    Image,
    ImageChops,
    ImageCms,
    ImageDraw,
    ImageFile,
    UnidentifiedImageError,
    features,
)

DEFAULT_SIZES = (100, 200, 400)

_Box = tuple[float, float, float, float]

# Measured on the 40 renderable corpus files; PNG bytes of 100+200+400 and encode time per file:
# level 1: 265 KiB 13 ms, 2: 261 KiB 15 ms, 3: 256 KiB 19 ms, 6 (zlib default): 248 KiB 54 ms,
# 9: 244 KiB 187 ms. Level 3 is 3% larger than 6 for a third of its time.
_PNG_COMPRESS_LEVEL = 3
_MASK_SUPERSAMPLING = 4
# With a source more than 3x the thumbnail, Pillow first box-reduces by an integer factor and
# then applies LANCZOS: visually the same result, about five times faster on a 5000 px square.
_REDUCING_GAP = 3.0

_BASE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
_SUBTYPES = {"MPO": "jpeg"}  # MIME subtype where it is not the lower-cased format name
# What Pillow's parsers and decoders raise on cut or corrupt input (found by reading and fuzzing;
# Pillow documents no narrower set).
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    LookupError,
    TypeError,
    ArithmeticError,
    RuntimeError,  # the AVIF plugin's decoder
    Image.DecompressionBombError,
)
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"qoif", "QOI"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
)
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
_BMP_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_WIDE_GREY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_PROFILE_MODES = {"RGB ": "RGB", "GRAY": "L", "CMYK": "CMYK"}


@dataclass(frozen=True)
class Limits:
    """Upload limits. Both are inclusive: exactly ``max_bytes`` or ``max_pixels`` is accepted."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000


class ImageRejected(Exception):
    """Permanent: the input can never render.

    ``code`` is one of
    EMPTY               zero bytes
    TOO_LARGE           more than ``Limits.max_bytes`` bytes (checked before anything is parsed)
    NOT_AN_IMAGE        no image signature at all (text, HTML, documents, archives, noise)
    UNSUPPORTED_FORMAT  a recognisable image format outside the allow-list (SVG, TIFF, HEIC, ...)
    TOO_MANY_PIXELS     the header declares more than ``Limits.max_pixels`` pixels
    TRUNCATED           an accepted format whose header or data is cut short or corrupt
    and ``reason`` says what was wrong, for people.
    """

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(code, reason)  # both in args, so the error pickles across processes
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


@dataclass(frozen=True)
class ImageInfo:
    """What the header says. ``width`` and ``height`` are as stored, before EXIF orientation."""

    format: str
    content_type: str
    width: int
    height: int

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1_000_000


@dataclass(frozen=True)
class Thumbnail:
    """One RGBA PNG of ``size`` x ``size`` pixels."""

    size: int
    png: bytes


def probe(data: bytes, limits: Limits = Limits()) -> ImageInfo:
    """Header only: never decodes pixel data. Raises ImageRejected.

    A file whose pixel data is cut short passes here; ``render`` reports it as TRUNCATED.
    """
    with _pillow_configured(limits):
        img = _open(data, limits)
    fmt = img.format or ""
    return ImageInfo(fmt, f"image/{_SUBTYPES.get(fmt, fmt.lower())}", *img.size)


def render(
    data: bytes, sizes: Sequence[int] = DEFAULT_SIZES, limits: Limits = Limits()
) -> list[Thumbnail]:
    """Raises ImageRejected for permanent input errors.

    Returns one thumbnail per entry of ``sizes`` (pixels, in that order): the upright first frame,
    centre-cropped to a square, converted to sRGB, resized with LANCZOS (up as well as down) and
    masked to the inscribed circle. A ValueError means bad ``sizes``, never bad data.
    """
    if not sizes or min(sizes) < 1:
        raise ValueError(f"sizes must be positive pixel counts, got {list(sizes)!r}")
    with _pillow_configured(limits):
        img = _open(data, limits)
        square, box = _decode_square(img, max(sizes))
        return [_thumbnail(square, box, size) for size in sizes]


@contextmanager
def _pillow_configured(limits: Limits) -> Iterator[None]:
    """Pillow set up for this call, whatever the calling process has (or has not) configured.

    Its bomb check follows ``limits.max_pixels``: it raises only above twice that and merely warns
    in between, so ``_check_pixels`` compares for itself. Its warnings never surface, even under
    ``-W error``: the bomb warning is superseded, and the UserWarnings are notes on malformed input
    that no caller can act on. Both settings are process-wide; renders run one per worker process.
    """
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _open(data: bytes, limits: Limits) -> ImageFile.ImageFile:
    """Identify the format by content and apply the limits from the header, decoding nothing."""
    if not data:
        raise ImageRejected("EMPTY", "the upload is empty")
    if len(data) > limits.max_bytes:
        raise ImageRejected(
            "TOO_LARGE",
            f"the upload is {len(data):,} bytes, over the limit of {limits.max_bytes:,}",
        )
    try:
        img = Image.open(io.BytesIO(data), formats=_accepted_formats())
    except Image.DecompressionBombError as exc:
        reason = f"the header declares over twice the limit of {limits.max_pixels:,} pixels"
        raise ImageRejected("TOO_MANY_PIXELS", reason) from exc
    except UnidentifiedImageError as exc:
        raise _unidentified(data) from exc
    except _DECODE_ERRORS as exc:
        raise ImageRejected("TRUNCATED", f"the image header is damaged: {exc}") from exc
    _check_pixels(img.size, limits)
    return img


def _check_pixels(size: tuple[int, int], limits: Limits) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageRejected("TRUNCATED", f"the header declares an empty {width}x{height} image")
    if width * height > limits.max_pixels:
        raise ImageRejected(
            "TOO_MANY_PIXELS",
            f"{width}x{height} is {width * height:,} pixels, above {limits.max_pixels:,}",
        )


@lru_cache(maxsize=1)
def _accepted_formats() -> tuple[str, ...]:
    """JPEG (and MPO, which Pillow's JPEG opener returns), PNG/APNG, WebP and GIF always; AVIF and
    HEIF only when this installation can decode them."""
    formats = list(_BASE_FORMATS)
    if features.check_module("avif") and "AVIF" in Image.registered_extensions().values():
        formats.append("AVIF")
    if _register_heif():
        formats.append("HEIF")
    return tuple(formats)


def _register_heif() -> bool:
    try:
        pillow_heif = importlib.import_module("pillow_heif")
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def _unidentified(data: bytes) -> ImageRejected:
    """Why no accepted opener took ``data``: damaged, another image format, or not an image."""
    kind = _sniff(data)
    if kind is None:
        return ImageRejected("NOT_AN_IMAGE", "the data is not a recognised image")
    if kind in _accepted_formats():
        return ImageRejected("TRUNCATED", f"the {kind} header is damaged")
    accepted = ", ".join(_accepted_formats())
    return ImageRejected("UNSUPPORTED_FORMAT", f"{kind} images are not accepted (only {accepted})")


def _sniff(data: bytes) -> str | None:
    """The image format ``data`` claims by its signature alone, accepted or not."""
    for signature, kind in _SIGNATURES:
        if data.startswith(signature):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":
        return _iso_brand(data)
    if data[:2] == b"BM" and int.from_bytes(data[14:18], "little") in _BMP_HEADER_SIZES:
        return "BMP"
    if _is_svg(data):
        return "SVG"
    return None


def _iso_brand(data: bytes) -> str | None:
    """AVIF or HEIF from the brands in an ISO-BMFF ``ftyp`` box (other brands are video)."""
    end = min(int.from_bytes(data[:4], "big"), 64)
    brands = {data[i : i + 4] for i in range(8, end, 4)}
    if brands & {b"avif", b"avis"}:
        return "AVIF"
    return "HEIF" if brands & _HEIF_BRANDS else None


def _is_svg(data: bytes) -> bool:
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<svg"):
        return True
    return head.startswith((b"<?xml", b"<!doctype svg", b"<!--")) and b"<svg" in head


def _decode_square(img: ImageFile.ImageFile, largest: int) -> tuple[Image.Image, _Box]:
    """Decode frame 0 once; return its upright centre square as 8-bit sRGB ("RGB" or "RGBa")."""
    try:
        if img.format in ("JPEG", "MPO"):
            # DCT scaling: the smallest 1/1..1/8 scale whose short side still covers ``largest``.
            # Asking for a square keeps this true whichever way EXIF later turns the axes.
            img.draft("RGB", (largest, largest))
        img.load()
    except _DECODE_ERRORS as exc:
        raise ImageRejected(
            "TRUNCATED", f"the {img.format} data is cut short or corrupt: {exc}"
        ) from exc
    icc = img.info.get("icc_profile")
    square, box = _centre_square(_upright(img))
    return _premultiplied_srgb(square, icc if isinstance(icc, bytes) else None), box


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (JPEG APP1 or PNG eXIf) as ``ImageOps.exif_transpose`` would,
    without copying when upright. A missing, out-of-range (e.g. 0) or unreadable tag means upright.
    """
    try:
        method = _TRANSPOSE.get(img.getexif().get(ExifTags.Base.Orientation, 1))
    except _DECODE_ERRORS:
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


def _premultiplied_srgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    """8-bit sRGB: "RGB" when opaque, else "RGBa" (premultiplied), so that resizing never lets the
    colour hidden under fully transparent pixels bleed into visible ones."""
    alpha = None
    if img.has_transparency_data:
        alpha = img.convert("RGBA").getchannel("A")
        img.info.pop("transparency", None)  # now in ``alpha``; ``img`` is our own crop
    rgb = _to_srgb(_colour_only(_eight_bit(img)), icc)
    if alpha is None:
        return rgb
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

    A profile that is unreadable or for another colour space is ignored, as browsers do.
    """
    transform = _transform_to_srgb(icc, img.mode) if icc else None
    if transform is not None:
        try:
            return transform.apply(img)
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # an unusable profile is ignored, as above
    return img.convert("RGB")


@lru_cache(maxsize=8)
def _transform_to_srgb(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    try:
        profile = ImageCms.getOpenProfile(io.BytesIO(icc))
        if _PROFILE_MODES.get(profile.profile.xcolor_space) != mode:
            return None
        return ImageCms.buildTransform(
            profile, _srgb_profile(), mode, "RGB", ImageCms.Intent.RELATIVE_COLORIMETRIC
        )
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


@lru_cache(maxsize=1)
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _thumbnail(square: Image.Image, box: _Box, size: int) -> Thumbnail:
    resized = square.resize(
        (size, size), Image.Resampling.LANCZOS, box=box, reducing_gap=_REDUCING_GAP
    )
    mask = _circle_mask(size)
    if resized.mode == "RGBa":
        resized = resized.convert("RGBA")
        mask = ImageChops.multiply(resized.getchannel("A"), mask)
    resized.putalpha(mask)
    return Thumbnail(size=size, png=_encode_png(resized))


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


def _encode_png(img: Image.Image) -> bytes:
    img.info = {}  # no ICC profile, EXIF or text from the source reaches the thumbnail
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=False, compress_level=_PNG_COMPRESS_LEVEL)
    return out.getvalue()
