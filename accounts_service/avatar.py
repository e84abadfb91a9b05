"""Cheap header check of an uploaded avatar: allowed format and limits, without decoding pixels."""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageFile, UnidentifiedImageError, features

_CONTENT_TYPES = {
    **{"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "GIF": "image/gif"},
    **{"WEBP": "image/webp", "AVIF": "image/avif"},
}
# What Pillow's header parsers raise on damaged input; it documents no narrower set.
_HEADER_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError,
                  TypeError, ZeroDivisionError, OverflowError)  # fmt: skip
_ACCEPTED_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")
# TIFF, PSD, ICO, QOI, JPEG 2000; ISO-BMFF (HEIC, AVIF without the codec) and BMP are checked below.
_OTHER_IMAGE_MAGIC = (
    b"II*\x00",
    b"MM\x00*",
    b"8BPS",
    b"\x00\x00\x01\x00",
    b"qoif",
    b"\xff\x4f\xff\x51",
)


@dataclass(frozen=True)
class AvatarLimits:
    """Inclusive upload limits: exactly ``max_bytes`` or ``max_pixels`` is accepted."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000


class AvatarRejected(Exception):
    """The upload can never become an avatar. ``code``: EMPTY, TOO_LARGE, NOT_AN_IMAGE,
    UNSUPPORTED_FORMAT, TOO_MANY_PIXELS, or TRUNCATED for a damaged header (cut pixel data is
    only found by the renderer, which decodes); ``reason`` is for people."""

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


def inspect_avatar(data: bytes, limits: AvatarLimits = AvatarLimits()) -> AvatarInfo:
    """Identify ``data`` by content (never by name) and check the limits from its header alone."""
    if not data:
        raise AvatarRejected("EMPTY", "the upload is empty")
    if len(data) > limits.max_bytes:
        raise AvatarRejected("TOO_LARGE", f"{len(data):,} bytes is over {limits.max_bytes:,}")
    img = _open_header(data)
    width, height = img.size
    if width * height > limits.max_pixels:
        reason = f"{width}x{height} is over {limits.max_pixels:,} pixels"
        raise AvatarRejected("TOO_MANY_PIXELS", reason)
    fmt = img.format or ""
    return AvatarInfo(fmt, _CONTENT_TYPES.get(fmt, "application/octet-stream"), width, height)


def _open_header(data: bytes) -> ImageFile.ImageFile:
    """``Image.open`` is lazy: it parses the header and leaves the pixel data alone."""
    try:
        with warnings.catch_warnings():  # our own pixel limit replaces Pillow's bomb warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)
            return Image.open(io.BytesIO(data), formats=_accepted_formats())
    except Image.DecompressionBombError as exc:
        raise AvatarRejected(
            "TOO_MANY_PIXELS", f"the header declares too many pixels ({exc})"
        ) from exc
    except UnidentifiedImageError as exc:
        raise _unidentified(data) from exc
    except _HEADER_ERRORS as exc:
        raise AvatarRejected("TRUNCATED", f"the image header is damaged: {exc}") from exc


@lru_cache(maxsize=1)
def _accepted_formats() -> tuple[str, ...]:
    avif = features.check_module("avif") and "AVIF" in Image.registered_extensions().values()
    return ("JPEG", "PNG", "WEBP", "GIF", *(("AVIF",) if avif else ()))


def _unidentified(data: bytes) -> AvatarRejected:
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    is_svg = head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head)
    is_bmp = data[:2] == b"BM" and data[6:10] == bytes(4)
    if is_svg or is_bmp or data.startswith(_OTHER_IMAGE_MAGIC) or data[4:8] == b"ftyp":
        accepted = ", ".join(_accepted_formats())
        return AvatarRejected("UNSUPPORTED_FORMAT", f"not one of the accepted formats: {accepted}")
    if data.startswith(_ACCEPTED_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return AvatarRejected("TRUNCATED", "the image header is damaged")
    return AvatarRejected("NOT_AN_IMAGE", "the data is not a recognised image")
