"""WebP: the chunks of its RIFF container (animation frames are ANMF chunks)."""

from __future__ import annotations

import struct

from image_policy.exif import walk_tiff
from image_policy.walk import Walk

_IMAGE = frozenset({b"VP8 ", b"VP8L", b"ALPH", b"ANMF"})
_METADATA = frozenset({b"ICCP", b"EXIF", b"XMP "})
_CHUNKS = "WebP chunks"


def scan_webp(walk: Walk) -> None:
    view = walk.view
    end = min(len(view), 8 + struct.unpack_from("<I", view, 4)[0])
    pos = 12
    canvas = False
    while pos + 8 <= end:
        kind, length = struct.unpack_from("<4sI", view, pos)
        body = pos + 8
        pos = body + length + (length & 1)
        if walk.frames or kind in _IMAGE:
            walk.step(_CHUNKS)
        else:
            walk.header(_CHUNKS)
        chunk = view[body : min(body + length, end)]
        if kind == b"VP8X" and len(chunk) >= 10:
            canvas = True
            walk.width = 1 + int.from_bytes(chunk[4:7], "little")
            walk.height = 1 + int.from_bytes(chunk[7:10], "little")
        elif kind == b"ANMF":
            walk.frame("WebP animation frames")
        elif kind in (b"VP8 ", b"VP8L"):
            walk.frames = max(walk.frames, 1)
            if not canvas:
                walk.width, walk.height = _bitstream_size(kind, chunk)
        elif kind in _METADATA:
            walk.metadata("WebP ICCP, EXIF and XMP chunks", len(chunk))
            if kind == b"EXIF":
                walk_tiff(walk, chunk[6:] if chunk[:6].tobytes() == b"Exif\0\0" else chunk, "EXIF")


def _bitstream_size(kind: bytes, chunk: memoryview) -> tuple[int, int]:
    """Width and height from a VP8 key frame header or a VP8L header; (0, 0) when cut."""
    if kind == b"VP8 " and len(chunk) >= 10 and chunk[3:6].tobytes() == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", chunk, 6)
        return width & 0x3FFF, height & 0x3FFF
    if kind == b"VP8L" and len(chunk) >= 5 and chunk[0] == 0x2F:
        bits = struct.unpack_from("<I", chunk, 1)[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return 0, 0
