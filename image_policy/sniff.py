"""The format allow-list, and what bytes no accepted opener took claim to be by signature."""

from __future__ import annotations

import importlib
from functools import lru_cache

from PIL import Image, features

from image_policy.errors import ImageRejected

_BASE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
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


@lru_cache(maxsize=1)
def accepted_formats() -> tuple[str, ...]:
    """Pillow format names: JPEG (and MPO, which Pillow's JPEG opener returns), PNG/APNG, WebP
    and GIF always; AVIF and HEIF only when this installation can decode them (pillow_heif is
    optional: registered here when installed)."""
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


def unidentified(data: bytes) -> ImageRejected:
    """Why no accepted opener took ``data``: damaged (TRUNCATED), another image format
    (UNSUPPORTED_FORMAT), or not an image (NOT_AN_IMAGE)."""
    kind = sniff(data)
    if kind is None:
        return ImageRejected("NOT_AN_IMAGE", "the data is not a recognised image")
    if kind in accepted_formats():
        return ImageRejected("TRUNCATED", f"the {kind} header is damaged")
    accepted = ", ".join(accepted_formats())
    return ImageRejected("UNSUPPORTED_FORMAT", f"{kind} images are not accepted (only {accepted})")


def sniff(data: bytes) -> str | None:
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
