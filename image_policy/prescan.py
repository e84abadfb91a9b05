"""The structural pre-scan: bounded work on any bytes, before Pillow parses them.

Pillow's header parsers walk segments, chunks and blocks in Python, one at a time, and its
decoders take time in proportion to a JPEG's scans; a small file can hold millions of them.
``prescan`` counts them at C speed or up to a cap (under 30 ms of CPU and 3 MiB of memory for
20 MiB of anything, by bench/prescan.py) and raises TooComplex past a limit of ``ScanLimits``.
It judges nothing else: unknown, damaged or cut bytes give what it could read, and the verdict
(NOT_AN_IMAGE, TRUNCATED, UNSUPPORTED_FORMAT, TOO_MANY_PIXELS) is left to the header check
that follows.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable

from image_policy.bmff import scan_bmff
from image_policy.gif import scan_gif
from image_policy.jpeg import scan_jpeg
from image_policy.png import scan_png
from image_policy.riff import scan_webp
from image_policy.walk import Damaged, ScanLimits, Structure, TooComplex, Walk

__all__ = ["ScanLimits", "Structure", "TooComplex", "prescan"]

_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
_DEFAULT_LIMITS = ScanLimits()
_SCANNERS: dict[str, Callable[[Walk], None]] = {
    "JPEG": scan_jpeg,
    "PNG": scan_png,
    "GIF": scan_gif,
    "WEBP": scan_webp,
    "AVIF": scan_bmff,
    "HEIF": scan_bmff,
}


def prescan(data: bytes | memoryview, limits: ScanLimits = _DEFAULT_LIMITS) -> Structure:
    """The format, header size and frame count of ``data``; raises only TooComplex.

    ``data`` is never copied (a memoryview of it is read in place). Format None means bytes
    this scan does not know (not an image, or a format outside JPEG, PNG, GIF, WebP, AVIF and
    HEIF); it is no verdict.
    """
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    format = _format(view)
    if format is None:
        return Structure(None, 0, 0, 0)
    walk = Walk(view, limits, format)
    # Cut or damaged: what was read so far stands, and Pillow gives the verdict.
    with contextlib.suppress(Damaged, struct.error, IndexError):
        _SCANNERS[format](walk)
    return walk.structure()


def _format(view: memoryview) -> str | None:
    head = view[:64].tobytes()
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(view) >= 12:
        return "WEBP"
    if head[4:8] == b"ftyp":
        brands = {head[i : i + 4] for i in range(8, min(int.from_bytes(head[:4], "big"), 64), 4)}
        if brands & _AVIF_BRANDS:
            return "AVIF"
        if brands & _HEIF_BRANDS:
            return "HEIF"
    return None
