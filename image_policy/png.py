"""PNG and APNG: every chunk to IEND, as Pillow's opener and then its decoder walk them."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

from image_policy.exif import byte_order, walk_directory, walk_tiff
from image_policy.walk import Walk

_TEXT = frozenset({b"tEXt", b"zTXt", b"iTXt", b"iCCP", b"eXIf"})
_COMPRESSED = frozenset({b"zTXt", b"iCCP"})
# Pillow inflates compressed text and ICC profiles up to 1 MiB each; deflate expands at most
# 1032 times.
_INFLATED_AT_MOST = 1024 * 1024
_DEFLATE_RATIO = 1032
# ImageMagick's hex-encoded EXIF in a text chunk, which Pillow reads when there is no eXIf.
_RAW_EXIF = b"Raw profile type exif\0"
_PIECE = 64 * 1024
_WHITESPACE = b" \t\n\r\x0b\x0c"
_CHUNKS = "PNG chunks"
_METADATA = "PNG text, iCCP and eXIf chunks"


def scan_png(walk: Walk) -> None:
    view = walk.view
    size = len(view)
    pos = 8
    in_header = True
    exif = False
    raw_exif: tuple[bytes, memoryview] | None = None
    while pos + 8 <= size:
        length, kind = struct.unpack_from(">I4s", view, pos)
        if kind == b"IDAT":
            in_header = False
        if in_header:
            walk.header(_CHUNKS)
        else:
            walk.step(_CHUNKS)
        body = pos + 8
        pos = body + length + 4
        if kind == b"IHDR" and body + 8 <= size:
            walk.width, walk.height = struct.unpack_from(">II", view, body)
        elif kind == b"fcTL":
            walk.frame("APNG frames")
        elif kind in _TEXT:
            chunk = view[body : min(pos - 4, size)]
            walk.metadata(_METADATA, _held(kind, chunk))
            if kind == b"eXIf":
                exif = True
                walk_tiff(walk, chunk, "EXIF")
            elif chunk[: len(_RAW_EXIF)] == _RAW_EXIF:
                raw_exif = (kind, chunk)
        elif kind == b"IEND":
            break
    walk.frames = max(walk.frames, 1)
    if raw_exif and not exif:
        _walk_raw_exif(walk, *_text(*raw_exif))


def _held(kind: bytes, chunk: memoryview) -> int:
    """The bytes Pillow may hold for a text chunk: compressed ones as inflated."""
    compressed = kind in _COMPRESSED
    if kind == b"iTXt":  # keyword (1-79 bytes), NUL, then the compression flag
        keyword_end = chunk[:81].tobytes().find(b"\0")
        compressed = 0 <= keyword_end < len(chunk) - 1 and chunk[keyword_end + 1] == 1
    if not compressed:
        return len(chunk)
    return max(len(chunk), min(len(chunk) * _DEFLATE_RATIO, _INFLATED_AT_MOST))


def _text(kind: bytes, chunk: memoryview) -> tuple[bool, memoryview]:
    """Whether a text chunk is compressed, and its text (compressed or not), as Pillow reads it."""
    keyword_end = chunk[:81].tobytes().find(b"\0")
    if kind == b"zTXt":  # keyword, NUL, method
        return True, chunk[keyword_end + 2 :]
    if kind == b"iTXt":  # keyword, NUL, flag, method, language, NUL, translated keyword, NUL
        head = chunk[:1024].tobytes()
        text_start = head.find(b"\0", head.find(b"\0", keyword_end + 3) + 1) + 1
        compressed = keyword_end + 1 < len(chunk) and chunk[keyword_end + 1] == 1
        return compressed, chunk[text_start:] if text_start > 0 else chunk[len(chunk) :]
    return False, chunk[keyword_end + 1 :]


def _walk_raw_exif(walk: Walk, compressed: bool, text: memoryview) -> None:
    """Pillow's reading: inflated (to 1 MiB), lines 4 on, from hex; then IFD0, the only
    directory it reads there. Decoded a piece at a time, keeping the header and IFD0 only."""
    tiff = _HexTiff(2 + 12 * (walk.limits.max_segments + 1) + 4)
    try:
        for piece in _pieces(compressed, text):
            tiff.feed(piece)
    except (zlib.error, ValueError):
        return  # Pillow reads no EXIF from it
    order = byte_order(tiff.head)
    if order is None or tiff.carry or tiff.ifd0 + 2 > tiff.size:
        return
    walk_directory(walk, memoryview(tiff.ifd), order, tiff.size, "EXIF")


def _pieces(compressed: bool, text: memoryview) -> Iterator[bytes]:
    if not compressed:
        for start in range(0, len(text), _PIECE):
            yield text[start : start + _PIECE].tobytes()
        return
    inflate = zlib.decompressobj()
    produced, rest = 0, text
    while rest:
        piece = inflate.decompress(rest, _PIECE)
        produced += len(piece)
        if produced > _INFLATED_AT_MOST:
            raise ValueError("Pillow refuses text that inflates past 1 MiB")
        yield piece
        rest = memoryview(inflate.unconsumed_tail)
        if not piece and not rest:
            return


class _HexTiff:
    """Hex text decoded as it comes: its size, header and the bytes of IFD0 (up to ``keep``)."""

    def __init__(self, keep: int) -> None:
        self.lines_to_skip = 3
        self.carry = b""
        self.size = 0
        self.head = bytearray()
        self.ifd0 = -1
        self.ifd = bytearray()
        self._keep = keep

    def feed(self, piece: bytes) -> None:
        while self.lines_to_skip and piece:
            newline = piece.find(b"\n")
            piece = piece[newline + 1 :] if newline >= 0 else b""
            self.lines_to_skip -= newline >= 0
        digits = self.carry + piece.translate(None, _WHITESPACE)
        even = len(digits) & ~1
        self.carry = digits[even:]
        self._take(bytes.fromhex(digits[:even].decode("latin-1")))

    def _take(self, data: bytes) -> None:
        start, self.size = self.size, self.size + len(data)
        if len(self.head) < 8:
            self.head += data[: 8 - len(self.head)]
            order = byte_order(self.head)
            if len(self.head) == 8 and order:
                self.ifd0 = struct.unpack_from(order + "I", self.head, 4)[0]
        if self.ifd0 >= 8 and len(self.ifd) < self._keep:
            wanted = self.ifd0 + len(self.ifd)
            if start <= wanted < self.size:
                self.ifd += data[wanted - start : wanted - start + self._keep - len(self.ifd)]
