"""AVIF and HEIF: the ISO-BMFF boxes their decoders parse before the first frame.

The top-level boxes, the ``meta`` box and its item tables: ``pitm`` (the primary item), ``iinf``
(item types, to find EXIF and XMP items and image grids), ``iloc`` (where items are), ``idat``
(data stored in ``meta``, as grids often are), ``iprp`` (properties: ``ispe`` sizes, ``colr`` ICC
profiles, and ``ipma``, which item has which). The tables are read once the whole ``meta`` box
has been walked, keeping only what concerns the primary item and the metadata items: the memory
held stays small whatever the number of entries.

Every box is counted against the caps (``max_segments`` before the first frame, ``max_blocks``
in all), and so are the entries of ``ipma`` and ``iloc``. The depth is fixed: the walk descends
only ``meta``, then ``iinf`` and ``iprp``, then ``ipco``; boxes nested anywhere else are
skipped whole, by their size, which is clamped to their parent's end (a size past it is a cut
file, left to the decoder).

The size is the primary item's ``ispe`` (else the largest ``ispe``), or a primary grid's output
size (the ``grid`` item's payload) when that is larger: libheif allocates the grid's canvas by
its payload and checks it against ``ispe`` only after decoding the tiles into it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from image_policy.exif import walk_tiff
from image_policy.walk import Walk

_BOXES = "ISO-BMFF boxes"
_ENTRIES = "ISO-BMFF item entries"
_METADATA = "ISO-BMFF ICC profiles, EXIF and XMP items"
_METADATA_ITEMS = frozenset({b"Exif", b"mime"})
_GRID = b"grid"
_FIELDS = {0: "0s", 4: "I", 8: "Q"}  # iloc field sizes; "0s" reads as b"" (taken as 0)

_Span = tuple[int, int]


@dataclass
class _Tables:
    primary: int = -1
    metadata_items: dict[int, bytes] = field(default_factory=dict)  # item -> Exif or mime
    grids: set[int] = field(default_factory=set)  # items of type grid
    idat: _Span | None = None
    properties: _Span | None = None  # ipco
    associations: _Span | None = None  # ipma
    locations: _Span | None = None  # iloc


def scan_bmff(walk: Walk) -> None:
    tables = _Tables()
    for kind, body, end in _boxes(walk, 0, len(walk.view)):
        if kind == b"meta":
            _scan_meta(walk, tables, body + 4, end)
    walk.frames = 1
    if tables.properties:
        primary = _primary_properties(walk, tables)
        walk.width, walk.height = _size(walk, tables.properties, primary)
    if tables.locations:
        for kind, length, extent in _item_locations(walk, tables, *tables.locations):
            if kind == _GRID:
                _grid_size(walk, extent)
            else:
                _scan_metadata_item(walk, kind, length, extent)


def _boxes(walk: Walk, pos: int, end: int, count: bool = True) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, end) of each box in ``[pos, end)``, each counted if ``count``."""
    view = walk.view
    end = min(end, len(view))
    while pos + 8 <= end:
        if count:
            walk.header(_BOXES)
        size, kind = struct.unpack_from(">I4s", view, pos)
        body = pos + 8
        if size == 1 and body + 8 <= end:
            size = struct.unpack_from(">Q", view, body)[0]
            body += 8
        elif size == 0:
            size = end - pos
        if size < body - pos:
            return  # damaged
        yield kind, body, min(pos + size, end)
        pos += size


def _scan_meta(walk: Walk, tables: _Tables, pos: int, end: int) -> None:
    view = walk.view
    for kind, body, box_end in _boxes(walk, pos, end):
        if body + 4 > box_end:
            continue
        version = view[body]
        if kind == b"pitm" and body + (6 if version == 0 else 8) <= box_end:
            tables.primary = struct.unpack_from(">H" if version == 0 else ">I", view, body + 4)[0]
        elif kind == b"iinf":
            start = body + (6 if version == 0 else 8)
            for entry, entry_body, entry_end in _boxes(walk, start, box_end):
                if entry == b"infe" and entry_body < entry_end:
                    _item_type(view, tables, entry_body, entry_end)
        elif kind == b"iprp":
            for child, child_body, child_end in _boxes(walk, body, box_end):
                if child == b"ipco":
                    tables.properties = (child_body, child_end)
                    _count_properties(walk, child_body, child_end)
                elif child == b"ipma" and child_body + 8 <= child_end:
                    tables.associations = (child_body, child_end)
        elif kind == b"iloc":
            tables.locations = (body, box_end)
        elif kind == b"idat":
            tables.idat = (body, box_end)


def _item_type(view: memoryview, tables: _Tables, pos: int, end: int) -> None:
    """Notes the item of an ``infe`` (versions 2 and 3 have a type) if it is metadata."""
    version = view[pos]
    layout = ">H2x4s" if version == 2 else ">I2x4s"
    if version in (2, 3) and pos + 4 + struct.calcsize(layout) <= end:
        item, item_type = struct.unpack_from(layout, view, pos + 4)
        if item_type in _METADATA_ITEMS:
            tables.metadata_items[item] = item_type
        elif item_type == _GRID:
            tables.grids.add(item)


def _count_properties(walk: Walk, pos: int, end: int) -> None:
    """Counts the property boxes, and the ICC profiles among them as metadata."""
    view = walk.view
    for kind, body, box_end in _boxes(walk, pos, end):
        if kind == b"colr" and view[body : body + 4].tobytes() in (b"prof", b"rICC"):
            walk.metadata(_METADATA, box_end - body - 4)


def _size(walk: Walk, properties: _Span, primary: frozenset[int]) -> tuple[int, int]:
    """The primary item's ``ispe``, else the largest: a HEIF grid's is its whole picture."""
    view = walk.view
    largest = (0, 0)
    for index, (kind, body, end) in enumerate(_boxes(walk, *properties, count=False), start=1):
        if kind == b"ispe" and body + 12 <= end:
            width, height = struct.unpack_from(">II", view, body + 4)
            if index in primary:
                return width, height
            if width * height > largest[0] * largest[1]:
                largest = (width, height)
    return largest


def _primary_properties(walk: Walk, tables: _Tables) -> frozenset[int]:
    """The property indices ``ipma`` gives the primary item."""
    if tables.associations is None or tables.primary < 0:
        return frozenset()
    view = walk.view
    pos, end = tables.associations
    version, wide = view[pos], view[pos + 3] & 1
    count = struct.unpack_from(">I", view, pos + 4)[0]
    pos += 8
    head = struct.Struct(">HB" if version == 0 else ">IB")
    code, size, mask = ("H", 2, 0x7FFF) if wide else ("B", 1, 0x7F)
    for _ in range(count):
        walk.step(_ENTRIES)
        if pos + head.size > end:
            break
        item, associations = head.unpack_from(view, pos)
        pos += head.size
        if pos + associations * size > end:
            break
        if item == tables.primary:
            indices = struct.unpack_from(f">{associations}{code}", view, pos)
            return frozenset(index & mask for index in indices)
        pos += associations * size
    return frozenset()


def _item_locations(
    walk: Walk, tables: _Tables, pos: int, end: int
) -> Iterator[tuple[bytes, int, _Span | None]]:
    """``iloc``: (type, length, its extent if only one) of each metadata item stored in the
    file itself (construction method 0), and of the primary item if it is a grid (in the file,
    or in ``idat``: construction method 1). Notes the file as cut if an item in it ends past
    the bytes."""
    view = walk.view
    version = view[pos]
    if pos + 8 > end or version > 2:
        return
    index_size = view[pos + 5] & 15 if version else 0
    sizes = (view[pos + 4] >> 4, view[pos + 4] & 15, view[pos + 5] >> 4, index_size)
    if any(size not in _FIELDS for size in sizes):
        return  # not a size the standard allows
    offset, length, base, index = (_FIELDS[size] for size in sizes)
    ids = "I" if version == 2 else "H"
    count = struct.unpack_from(">" + ids, view, pos + 6)[0]
    pos += 6 + struct.calcsize(ids)
    # id, construction method (versions 1 and 2), data reference, base offset, extent count
    item = struct.Struct(">" + ids + ("H" if version else "") + "H" + base + "H")
    extent = struct.Struct(">" + index + offset + length)
    for _ in range(count):
        walk.step(_ENTRIES)
        if pos + item.size > end:
            return
        fields = item.unpack_from(view, pos)
        pos += item.size
        extents = fields[-1]
        if extents > 1:
            walk.step(_ENTRIES, extents - 1)
        if pos + extents * extent.size > end:
            return
        method = fields[1] & 15 if version else 0
        kind, origin = _item_kind(tables, fields[0], method)
        total, first = 0, None
        for _, at, size in extent.iter_unpack(view[pos : pos + extents * extent.size]):
            start = origin + (fields[-2] or 0) + (at or 0)
            if method == 0 and start + (size or 0) > len(view):
                walk.cut = True
            total += size or 0
            first = first or (start, size or 0)
        if kind:
            yield kind, total, first if extents == 1 else None
        pos += extents * extent.size


def _item_kind(tables: _Tables, item: int, method: int) -> tuple[bytes | None, int]:
    """What an ``iloc`` entry is to the scan (None: nothing), and where its offsets count from."""
    if method == 0 and item in tables.metadata_items:
        return tables.metadata_items[item], 0
    if item == tables.primary and item in tables.grids:
        if method == 0:
            return _GRID, 0
        if method == 1 and tables.idat:
            return _GRID, tables.idat[0]
    return None, 0


def _grid_size(walk: Walk, extent: _Span | None) -> None:
    """The output size in a grid's payload (ISO/IEC 23008-12 ImageGrid: version, flags, rows and
    columns less one, then width and height in 16 bits, or 32 if flag 1), if larger than the
    size so far."""
    if extent is None:
        return
    offset, length = extent
    payload = walk.view[offset : offset + length] if length else walk.view[offset:]
    wide = len(payload) >= 2 and payload[1] & 1
    layout = ">II" if wide else ">HH"
    if len(payload) < 4 + struct.calcsize(layout):
        return
    width, height = struct.unpack_from(layout, payload, 4)
    if width * height > walk.width * walk.height:
        walk.width, walk.height = width, height


def _scan_metadata_item(walk: Walk, kind: bytes, length: int, extent: _Span | None) -> None:
    walk.metadata(_METADATA, length)
    if kind == b"Exif" and extent:
        offset, length = extent
        payload = walk.view[offset : offset + length]
        if len(payload) >= 4:
            walk_tiff(walk, payload[4 + int.from_bytes(payload[:4], "big") :], "EXIF")
