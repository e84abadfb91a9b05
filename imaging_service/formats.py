"""The entrance of the renderer: the structural pre-scan, format allow-list by content, and
limits from the header."""

from __future__ import annotations

import importlib
import io
import re
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageFile, UnidentifiedImageError, features

from image_policy.prescan import ScanLimits, Structure, TooComplex, prescan

__all__ = [
    "DECODE_ERRORS",
    "ImageInfo",
    "ImageRejected",
    "Limits",
    "Structure",
    "measure",
    "open_image",
    "pillow_configured",
    "probe",
]

_BASE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
_SUBTYPES = {"MPO": "jpeg"}  # MIME subtype where it is not the lower-cased format name
# What Pillow's parsers and decoders raise on cut or corrupt input (found by reading and fuzzing;
# Pillow documents no narrower set).
DECODE_ERRORS = (
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


# The upload policy both services share: bytes, pixels and the pre-scan's caps, all inclusive.
Limits = ScanLimits
_DEFAULT_LIMITS = Limits()


class ImageRejected(Exception):
    """Permanent: the input can never render.

    ``code`` is one of
    EMPTY               zero bytes
    TOO_LARGE           more than ``Limits.max_bytes`` bytes (checked before anything is parsed)
    NOT_AN_IMAGE        no image signature at all (text, HTML, documents, archives, noise)
    UNSUPPORTED_FORMAT  a recognisable image format outside the allow-list (SVG, TIFF, HEIC, ...)
    TOO_MANY_PIXELS     the header declares more than ``Limits.max_pixels`` pixels
    TOO_COMPLEX         the structure is past a cap of the pre-scan (segments, metadata, scans,
                        frames), or the render ran past its time budget
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


def probe(data: bytes, limits: Limits = _DEFAULT_LIMITS) -> ImageInfo:
    """Header only: never decodes pixel data. Raises ImageRejected.

    A file whose pixel data is cut short passes here; ``render`` reports it as TRUNCATED.
    """
    with pillow_configured(limits):
        img = open_image(data, limits)
    fmt = img.format or ""
    return ImageInfo(fmt, f"image/{_SUBTYPES.get(fmt, fmt.lower())}", *img.size)


@contextmanager
def pillow_configured(limits: Limits) -> Iterator[None]:
    """Pillow set up for this call, whatever the calling process has (or has not) configured.

    Pillow raises its bomb error above twice its limit (and only warns below), inside
    ``Image.open``: before any decoder exists, including WebP's, which allocates its canvas when it
    is created. Half of ``limits.max_pixels`` makes that error fire just above our limit;
    ``open_image`` compares exactly. Pillow's warnings never surface, even under ``-W error``: the
    bomb warning is superseded, and the UserWarnings are notes on malformed input that no caller
    can act on. Both settings are process-wide; renders run one per worker process.
    """
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = (limits.max_pixels + 1) // 2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def measure(data: bytes, limits: Limits = _DEFAULT_LIMITS) -> Structure:
    """Format, size and frames from the structural pre-scan alone, with no Pillow parsing: what
    the main process needs to admit a render (its megapixels) without doing the render
    process's work. Bounded (under 30 ms of CPU for 20 MiB); run it off the event loop.

    Raises ImageRejected: EMPTY, TOO_LARGE, TOO_COMPLEX, and TOO_MANY_PIXELS when the header
    sizes it read say so. Anything else (not an image, damaged, another format) passes with
    what could be read, format None or sizes 0 included: the render process gives the verdict.
    """
    structure = _prescan(data, limits)
    if structure.width and structure.height:
        _check_pixels((structure.width, structure.height), limits)
    return structure


def open_image(data: bytes, limits: Limits) -> ImageFile.ImageFile:
    """Identify the format by content and apply the limits from the header, decoding nothing.

    Call inside ``pillow_configured``. Every check here runs before Pillow allocates a pixel,
    and the pre-scan before Pillow parses anything.
    """
    _prescan(data, limits)
    try:
        img = Image.open(io.BytesIO(data), formats=_accepted_formats())
    except Image.DecompressionBombError as exc:
        declared = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow's message names the size
        pixels = f"{int(declared[1]):,} pixels" if declared else "more pixels"
        reason = f"the header declares {pixels}, above the limit of {limits.max_pixels:,}"
        raise ImageRejected("TOO_MANY_PIXELS", reason) from exc
    except UnidentifiedImageError as exc:
        raise _unidentified(data) from exc
    except DECODE_ERRORS as exc:
        raise ImageRejected("TRUNCATED", f"the image header is damaged: {exc}") from exc
    _check_pixels(img.size, limits)
    return img


def _prescan(data: bytes, limits: Limits) -> Structure:
    if not data:
        raise ImageRejected("EMPTY", "the upload is empty")
    if len(data) > limits.max_bytes:
        raise ImageRejected(
            "TOO_LARGE",
            f"the upload is {len(data):,} bytes, over the limit of {limits.max_bytes:,}",
        )
    try:
        return prescan(data, limits)
    except TooComplex as exc:
        raise ImageRejected(exc.code, exc.reason) from exc


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
