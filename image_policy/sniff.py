"""The format allow-list, and what bytes no accepted opener took claim to be by signature."""

from __future__ import annotations

import importlib
import threading
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
# pillow_heif's options, set with its opener. Only the primary image is ever decoded: no embedded
# thumbnails (we never ask for one), depth maps or auxiliary images (alpha stays: it is part of
# the primary image) are read at open, so none of them is parsed or held. One decoding thread: a
# render process runs one render on one core (imaging sizes its pool and its budgets so); four,
# pillow_heif's default, cut a 12 MP grid's render from 1.3 to 0.85 s but take a core's time
# more from the other renders.
_HEIF_OPTIONS = {
    "thumbnails": False,
    "depth_images": False,
    "aux_images": False,
    "decode_threads": 1,
}
_register_lock = threading.Lock()


@lru_cache(maxsize=1)
def accepted_formats() -> tuple[str, ...]:
    """Pillow format names: JPEG (and MPO, which Pillow's JPEG opener returns), PNG/APNG, WebP
    and GIF always; AVIF and HEIF only when this installation can decode them.

    HEIF is pillow_heif's opener (a pinned dependency; without it HEIF is refused as
    UNSUPPORTED_FORMAT), registered here, on the first call, under a lock: ``lru_cache`` lets two
    threads compute at once, and registering changes Pillow's and pillow_heif's module state.
    pillow_heif registers one opener, "HEIF", which takes only HEVC brands (heic, heix, mif1, ...;
    never avif: AVIF stays Pillow's own), and ``Image.open(..., formats=...)`` tries no other.
    Registering is idempotent, and changes nothing for threads already opening files.
    """
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
    with _register_lock:
        pillow_heif.register_heif_opener(**_HEIF_OPTIONS)
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
