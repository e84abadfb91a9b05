"""JPEG: the segments Pillow walks up to the first scan, then the first frame's scans up to EOI."""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Iterator

from image_policy.exif import walk_tiff
from image_policy.walk import Damaged, TooComplex, Walk

# A window of the bytes translated so that a marker is always b"\xff\x01": FF followed by
# anything but 00 (a stuffed FF), D0-D7 (restart markers) or FF (fill). Searching that literal
# costs under 1.5 ns a byte whatever the bytes are, where a regex for FF followed by a class
# costs 8 ns for every FF (an entropy-coded stream of FF 00 is 20 MiB of them).
_CLASSES = bytes(0xFF if b == 0xFF else 0 if b == 0 or 0xD0 <= b <= 0xD7 else 1 for b in range(256))
_MARKER = re.compile(rb"\xff\x01")
_FIRST_WINDOW = 256  # most markers follow the previous segment at once
_LARGEST_WINDOW = 1024 * 1024
# In a photo's entropy-coded data FF is rare (1 byte in about 270), and a regex for FF and a
# marker's class run on the buffer itself, with no copy, finds the next marker at 0.35 ns a
# byte: 1.4 ms for a 4 MB scan against 4 ms through translated windows. A scan searched that
# way whose windows cost more than _FAST_NS_PER_BYTE of CPU (dense FF, as crafted) is searched
# the translated way from then on, so the worst case stays the translated one's.
_FAST_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")
_FAST_NS_PER_BYTE = 1.2
_FAST_SLACK_NS = 20_000  # a clock's granularity and a window's fixed costs
_NO_LENGTH = frozenset({*range(0xD0, 0xDA), 0xC8, *range(0xF0, 0xFE)})  # as Pillow reads them
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_APP_OR_COM = frozenset({*range(0xE0, 0xF0), 0xFE})
# The APPn segments Pillow parses or hands on, by marker: (signature, kind). Comments and other
# APPn segments are bytes it only keeps, one step each however large.
_METADATA = {
    0xE1: (
        (b"Exif\0\0", "EXIF"),
        (b"http://ns.adobe.com/xap/1.0/\0", "XMP"),
        (b"http://ns.adobe.com/xmp/extension/\0", "XMP"),
    ),
    0xE2: ((b"ICC_PROFILE\0", "ICC"), (b"MPF\0", "MPF")),
    0xED: ((b"Photoshop 3.0\0", "Photoshop"),),
}
# What libjpeg accepts between scans: SOS, DHT, DQT, DRI, DAC, DNL, APPn, COM; it stops with an
# error at anything else but EOI, RSTn and TEM.
_BETWEEN_SCANS = frozenset({0xDA, 0xC4, 0xDB, 0xDD, 0xCC, 0xDC}) | _APP_OR_COM
# Pillow appends every EXIF segment to the first, copying all of it each time.
_MAX_EXIF_SEGMENTS = 16
_SEGMENTS = "JPEG segments"
_APPS = "JPEG EXIF, XMP, ICC, MPF and Photoshop segments"


def scan_jpeg(walk: Walk) -> None:
    view = walk.view
    pos, exif = _scan_header(walk)
    walk.frames = 1
    if exif:
        tiff = exif[0] if len(exif) == 1 else memoryview(b"".join(exif))
        walk_tiff(walk, tiff, "EXIF")
    scans = segments = 1
    finder = _MarkerFinder()
    while (at := finder.next(view, pos, len(view))) >= 0:
        marker = view[at + 1]
        if marker == 0xD9 or (marker != 0x01 and marker not in _BETWEEN_SCANS):
            return  # the end of the first image, or an error that ends its decoding
        segments += 1  # real encoders write two a scan (a Huffman table and the scan)
        if segments > walk.limits.max_segments:
            raise TooComplex(f"more than {walk.limits.max_segments:,} JPEG segments between scans")
        if marker == 0x01:
            pos = at + 2
            continue
        body, pos = _segment(view, at)
        if marker == 0xDA:
            scans += 1
            if scans > walk.limits.max_scans:
                raise TooComplex(f"more than {walk.limits.max_scans:,} scans in a JPEG frame")
        elif marker in _APP_OR_COM:
            _metadata_kind(walk, marker, view[body:pos])


def _scan_header(walk: Walk) -> tuple[int, list[memoryview]]:
    """Up to the first SOS, as Pillow's JPEG opener: the end of that SOS and the TIFF blocks of
    the EXIF segments."""
    view = walk.view
    pos = 2
    exif: list[memoryview] = []
    while True:
        pos = _skip_stray_bytes(walk, pos)
        marker = view[pos + 1]
        walk.header(_SEGMENTS)
        if marker in _NO_LENGTH:
            pos += 2
            continue
        if marker < 0xC0:
            raise Damaged  # Pillow: "no marker found"
        body, pos = _segment(view, pos)
        if marker in _SOF and pos - body >= 5:
            walk.height, walk.width = struct.unpack_from(">HH", view, body + 1)
        elif marker in _APP_OR_COM:
            payload = view[body:pos]
            kind = _metadata_kind(walk, marker, payload)
            if kind == "EXIF":
                exif.append(payload[6:])
                if len(exif) > _MAX_EXIF_SEGMENTS:
                    raise TooComplex(f"more than {_MAX_EXIF_SEGMENTS} JPEG EXIF segments")
            elif kind == "MPF":
                walk_tiff(walk, payload[4:], "MPF")
            elif kind == "Photoshop":
                _walk_photoshop(walk, payload)
        elif marker == 0xDA:
            return pos, exif


def _metadata_kind(walk: Walk, marker: int, payload: memoryview) -> str | None:
    """Counts an APPn segment Pillow parses as metadata; returns its kind (None: not one)."""
    for signature, kind in _METADATA.get(marker, ()):
        if payload[: len(signature)] == signature:
            walk.metadata(_APPS, len(payload))
            return kind
    return None


def _walk_photoshop(walk: Walk, payload: memoryview) -> None:
    """Pillow reads the image resources of a Photoshop segment one at a time, in Python."""
    pos = 14
    size = len(payload)
    while pos + 7 <= size and payload[pos : pos + 4].tobytes() == b"8BIM":
        walk.entries("Photoshop resources", 1)
        pos += 7 + payload[pos + 6]  # signature, resource id, name length, name
        pos += pos & 1
        if pos + 4 > size:
            return
        pos += 4 + struct.unpack_from(">I", payload, pos)[0]
        pos += pos & 1


def _segment(view: memoryview, at: int) -> tuple[int, int]:
    """Where the payload of the segment whose marker is at ``at`` starts and ends."""
    if at + 4 > len(view):
        raise Damaged
    length = struct.unpack_from(">H", view, at + 2)[0]
    end = at + 2 + max(length, 2)
    if end > len(view):
        raise Damaged
    return at + 4, end


def _skip_stray_bytes(walk: Walk, pos: int) -> int:
    """The next marker at or after ``pos``; the bytes before it count as steps, as Pillow reads
    them one at a time."""
    view = walk.view
    allowance = walk.limits.max_segments + 2
    end = min(len(view), pos + allowance)
    at = _next_marker(view, pos, end)
    if at != pos:
        walk.header("JPEG segments and stray bytes", (at if at >= 0 else end) - pos)
    if at < 0:
        raise Damaged
    return at


def _next_marker(view: memoryview, pos: int, end: int) -> int:
    """The position of the next marker's FF in ``view[pos:end]``, or -1: in windows that
    double from 256 bytes to 1 MiB, so that a near marker costs little and a far one is found
    at C speed, with one window of memory."""
    if pos + 1 < end and view[pos] == 0xFF and _CLASSES[view[pos + 1]] == 1:
        return pos
    for start, stop in _windows(pos, end):
        found = _MARKER.search(view[start:stop].tobytes().translate(_CLASSES))
        if found:
            return start + found.start()
    return -1


def _windows(pos: int, end: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of windows over ``pos:end`` doubling from _FIRST_WINDOW to
    _LARGEST_WINDOW, each one byte into the next, so that a marker across two is found."""
    window = _FIRST_WINDOW
    while pos + 1 < end:
        yield pos, min(pos + window + 1, end)
        pos += window
        window = min(window * 2, _LARGEST_WINDOW)


class _MarkerFinder:
    """``_next_marker`` for the scans, by the regex on the buffer while that stays cheap."""

    def __init__(self) -> None:
        self._fast = True

    def next(self, view: memoryview, pos: int, end: int) -> int:
        if not self._fast:
            return _next_marker(view, pos, end)
        for start, stop in _windows(pos, end):
            started = time.thread_time_ns()
            found = _FAST_MARKER.search(view, start, stop)
            if found:
                return found.start()
            if (
                time.thread_time_ns() - started
                > _FAST_NS_PER_BYTE * (stop - start) + _FAST_SLACK_NS
            ):
                self._fast = False
                return _next_marker(view, stop - 1, end)
        return -1
