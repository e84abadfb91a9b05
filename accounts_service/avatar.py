"""Cheap header check of an uploaded avatar: allowed format and limits, without decoding pixels."""

from __future__ import annotations

import asyncio
import importlib
import io
import warnings
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageFile, UnidentifiedImageError, features

from image_policy.prescan import ScanLimits, TooComplex, prescan

_SUBTYPES = {"MPO": "jpeg"}  # MIME subtype where it is not the lower-cased format name
# What a header parser may raise on damaged input, beyond the SyntaxError, IndexError, TypeError
# and struct.error that Image.open itself turns into UnidentifiedImageError.
_HEADER_ERRORS = (OSError, ValueError, EOFError, KeyError, ArithmeticError, RuntimeError)
_ACCEPTED_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")
# TIFF, PSD, ICO, QOI, JPEG 2000; SVG, BMP and ISO-BMFF (HEIC, ...) are recognised in code.
_OTHER_MAGIC = (b"II*\x00", b"MM\x00*", b"8BPS", b"\x00\x00\x01\x00", b"qoif", b"\xffO\xffQ")


# The upload policy both services share: bytes, pixels and the pre-scan's caps, all inclusive
# (exactly ``max_bytes`` or ``max_pixels`` is accepted).
AvatarLimits = ScanLimits
_DEFAULT_LIMITS = AvatarLimits()


class AvatarRejected(Exception):
    """The upload can never become an avatar. ``code``: EMPTY, TOO_LARGE, NOT_AN_IMAGE,
    UNSUPPORTED_FORMAT, TOO_MANY_PIXELS, TOO_COMPLEX (past a cap of the structural pre-scan),
    or TRUNCATED for a damaged header (cut pixel data is only found by the renderer, which
    decodes); ``reason`` is for people."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


@dataclass(frozen=True)
class AvatarInfo:
    format: str
    content_type: str
    width: int
    height: int


def inspect_avatar(data: bytes, limits: AvatarLimits = _DEFAULT_LIMITS) -> AvatarInfo:
    """Identify ``data`` by content (never by name) and check the limits from its header alone.

    ``data`` must be the whole upload: Pillow's WebP and AVIF openers parse the complete
    container, so a prefix of a larger WebP or AVIF file is refused as damaged. Bounded work
    (the pre-scan runs before Pillow parses anything), but blocking: from a coroutine, call
    ``inspect_avatar_off_loop``.
    """
    if not data:
        raise AvatarRejected("EMPTY", "the upload is empty")
    if len(data) > limits.max_bytes:
        raise AvatarRejected("TOO_LARGE", f"{len(data):,} bytes is over {limits.max_bytes:,}")
    try:
        prescan(data, limits)
    except TooComplex as exc:
        raise AvatarRejected(exc.code, exc.reason) from exc
    img = _open_header(data)
    width, height = img.size
    if width * height > limits.max_pixels:
        reason = f"{width}x{height} is over {limits.max_pixels:,} pixels"
        raise AvatarRejected("TOO_MANY_PIXELS", reason)
    fmt = img.format or ""
    return AvatarInfo(fmt, f"image/{_SUBTYPES.get(fmt, fmt.lower())}", width, height)


async def inspect_avatar_off_loop(data: bytes, limits: AvatarLimits) -> AvatarInfo:
    """``inspect_avatar`` in a worker thread, so that the event loop never runs the check."""
    return await asyncio.to_thread(inspect_avatar, data, limits)


def _open_header(data: bytes) -> ImageFile.ImageFile:
    """``Image.open`` is lazy: it parses the header and leaves the pixel data alone."""
    try:
        # Our pixel limit supersedes Pillow's bomb warning; its UserWarnings only note bad input.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)
            return Image.open(io.BytesIO(data), formats=_accepted_formats())
    except Image.DecompressionBombError as exc:  # above 2x Pillow's global limit (179 MP)
        raise AvatarRejected(
            "TOO_MANY_PIXELS", f"the header declares too many pixels ({exc})"
        ) from exc
    except UnidentifiedImageError as exc:
        raise _unidentified(data) from exc
    except _HEADER_ERRORS as exc:
        raise AvatarRejected("TRUNCATED", f"the image header is damaged: {exc}") from exc


@lru_cache(maxsize=1)
def _accepted_formats() -> tuple[str, ...]:
    """As the renderer: AVIF and HEIF only where this installation can decode them."""
    avif = features.check_module("avif") and "AVIF" in Image.registered_extensions().values()
    return ("JPEG", "PNG", "WEBP", "GIF", *(("AVIF",) if avif else ()), *_heif())


def _heif() -> tuple[str, ...]:
    try:
        importlib.import_module("pillow_heif").register_heif_opener()
    except ImportError:
        return ()
    return ("HEIF",)


def _unidentified(data: bytes) -> AvatarRejected:
    """A damaged header of an accepted format, another image format, or no image at all."""
    webp = data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    avif = data[4:8] == b"ftyp" and b"avif" in data[8:32] and "AVIF" in _accepted_formats()
    if data.startswith(_ACCEPTED_MAGIC) or webp or avif:
        return AvatarRejected("TRUNCATED", "the image header is damaged")
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    svg = head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head)
    bmp = data[:2] == b"BM" and data[6:10] == bytes(4)
    if svg or bmp or data.startswith(_OTHER_MAGIC) or data[4:8] == b"ftyp":
        accepted = ", ".join(_accepted_formats())
        return AvatarRejected("UNSUPPORTED_FORMAT", f"not one of the accepted formats: {accepted}")
    return AvatarRejected("NOT_AN_IMAGE", "the data is not a recognised image")
