"""EXIF and MPF blocks: their TIFF directories, walked as Pillow reads them, loops refused."""

from __future__ import annotations

import struct

from image_policy.walk import TooComplex, Walk

# Bytes per value of each TIFF type Pillow reads; Pillow skips entries of other types.
_UNIT_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_UNIT_SIZES |= {16: 8, 17: 8, 18: 8}
_SUB_IFDS = frozenset({0x8769, 0x8825, 0xA005})  # EXIF, GPS and interoperability directories
_ENTRY = 12


def walk_tiff(walk: Walk, block: memoryview, what: str) -> None:
    """Walks every directory of a TIFF-structured ``block`` (IFD0, the next-IFD chain, the EXIF,
    GPS and interoperability directories).

    For each entry whose value lies outside it, Pillow copies the value out of the block, so
    values that overlap are copied again and again: the bytes copied beyond the block's own
    size count as metadata. A directory reached twice (a loop) is TooComplex; a damaged one ends
    the walk, as it ends Pillow's.
    """
    order = byte_order(block)
    if order is None:
        return
    pending = [struct.unpack_from(order + "I", block, 4)[0]]
    seen: set[int] = set()
    copied = 0
    while pending:
        offset = pending.pop()
        if offset < 8 or offset + 2 > len(block):
            continue  # no directory there: Pillow reads nothing either
        if offset in seen:
            raise TooComplex(f"the {what} directory at offset {offset:,} is reached twice (a loop)")
        seen.add(offset)
        copied += _walk_ifd(walk, block[offset:], order, len(block), what, pending)
    walk.metadata(f"{what} values", max(0, copied - len(block)))


def walk_directory(walk: Walk, ifd: memoryview, order: str, size: int, what: str) -> None:
    """One directory, starting at ``ifd``, of a TIFF block of ``size`` bytes held elsewhere."""
    copied = _walk_ifd(walk, ifd, order, size, what, [])
    walk.metadata(f"{what} values", max(0, copied - size))


def byte_order(block: memoryview | bytes | bytearray) -> str | None:
    """The struct byte order of a TIFF header, or None if ``block`` does not start with one."""
    if len(block) < 8 or bytes(block[:2]) not in (b"II", b"MM"):
        return None
    return "<" if block[0] == 0x49 else ">"


def _walk_ifd(
    walk: Walk, ifd: memoryview, order: str, limit: int, what: str, pending: list[int]
) -> int:
    """Bytes of the values Pillow would copy out of this directory (of a block of ``limit``
    bytes); queues its links."""
    count = struct.unpack_from(order + "H", ifd, 0)[0]
    whole = min(count, (len(ifd) - 2) // _ENTRY)
    walk.entries(f"{what} entries", max(whole, 1))
    copied = 0
    for tag, kind, number, value in struct.iter_unpack(
        order + "HHI4s", ifd[2 : 2 + whole * _ENTRY]
    ):
        unit = _UNIT_SIZES.get(kind)
        if unit is None:
            continue
        size = unit * number
        if size > 4:
            at = struct.unpack(order + "I", value)[0]
            if at + size > limit:
                return copied  # Pillow stops reading this directory at a cut value
            copied += size
        elif tag in _SUB_IFDS and unit == 4 and number == 1:
            pending.append(struct.unpack(order + "I", value)[0])
    if whole == count and 2 + whole * _ENTRY + 4 <= len(ifd):
        following = struct.unpack_from(order + "I", ifd, 2 + whole * _ENTRY)[0]
        if following:
            pending.append(following)
    return copied
