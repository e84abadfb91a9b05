"""The protobuf wire format walked against a message descriptor, to say which field is wrong.

The parser says only that a message is bad ("String field had bad UTF-8"); this walk names the
field (`thumbnails.small.object`, `sizes[3]`). It also bounds what parsing would build: every
field and every element of a packed repeated field counts, so that a small request cannot become
a huge message in memory (one byte of packed varint is 4 to 8 bytes once parsed), and nesting is
bounded. Pure: bytes and a descriptor in, a `Problem` or None out; the cost is linear in the
number of fields visited (at most `max_elements`) plus a C-speed UTF-8 check of string fields.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FieldDescriptor

MAX_ELEMENTS = 10_000
MAX_DEPTH = 32
MAX_FIELD_NUMBER = (1 << 29) - 1
_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = 0, 1, 2, 3, 4, 5
_FIXED_SIZE = {
    FieldDescriptor.TYPE_FIXED32: 4,
    FieldDescriptor.TYPE_SFIXED32: 4,
    FieldDescriptor.TYPE_FLOAT: 4,
    FieldDescriptor.TYPE_FIXED64: 8,
    FieldDescriptor.TYPE_SFIXED64: 8,
    FieldDescriptor.TYPE_DOUBLE: 8,
}
_NOT_PACKABLE = frozenset(
    {
        FieldDescriptor.TYPE_STRING,
        FieldDescriptor.TYPE_BYTES,
        FieldDescriptor.TYPE_MESSAGE,
        FieldDescriptor.TYPE_GROUP,
    }
)
_UTF8_CHUNK = 1 << 20  # checked in slices: a bad 30 MiB string never becomes a 30 MiB str
_HIGH_BYTES = bytes(range(0x80, 0x100))


@dataclass(frozen=True)
class Problem:
    """`field`: the proto path of the bad field ("" when it cannot be told); `description`
    completes a sentence that starts with the field."""

    field: str
    description: str


class _Stop(Exception):
    def __init__(self, field: str, description: str) -> None:
        super().__init__(field, description)
        self.problem = Problem(field, description)


def find_problem(
    data: bytes,
    descriptor: Descriptor,
    *,
    check_utf8: bool = True,
    max_elements: int = MAX_ELEMENTS,
    max_depth: int = MAX_DEPTH,
) -> Problem | None:
    """The first thing in `data` that makes it no valid `descriptor` message (or one too big to
    build), or None. String fields are held to proto3's rule (valid UTF-8) when `check_utf8`."""
    walk = _Walk(check_utf8, max_elements, max_depth)
    try:
        walk.message(memoryview(data), descriptor, "", 0)
    except _Stop as stop:
        return stop.problem
    return None


def _path(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


class _Walk:
    def __init__(self, check_utf8: bool, max_elements: int, max_depth: int) -> None:
        self._check_utf8 = check_utf8
        self._left = max_elements
        self._max_elements = max_elements
        self._max_depth = max_depth

    def _count(self, field: str, elements: int = 1) -> None:
        self._left -= elements
        if self._left < 0:
            raise _Stop(field, f"takes the request past {self._max_elements} fields and elements")

    def message(self, view: memoryview, descriptor: Descriptor, prefix: str, depth: int) -> None:
        if depth > self._max_depth:
            raise _Stop(prefix, f"is nested deeper than {self._max_depth} messages")
        seen: dict[int, int] = {}  # field number -> elements so far, to index repeated fields
        pos = 0
        while pos < len(view):
            tag, pos = _varint(view, pos, prefix)
            number, wire = tag >> 3, tag & 7
            if not 0 < number <= MAX_FIELD_NUMBER:
                raise _Stop(prefix, f"has an invalid field number {number}")
            field = descriptor.fields_by_number.get(number)
            name = prefix if field is None else _path(prefix, field.name)
            if field is not None and field.is_repeated:
                index = seen.get(number, 0)
                seen[number] = index + 1
                name = f"{name}[{index}]"
            self._count(name)
            if wire != _LEN:
                pos = self._skip(view, pos, tag, name, depth)
                continue
            length, pos = _varint(view, pos, name)
            if length > len(view) - pos:
                raise _Stop(name, "is cut short")
            if field is not None:
                self._contents(view[pos : pos + length], field, name, depth)
            pos += length

    def _contents(self, body: memoryview, field: FieldDescriptor, name: str, depth: int) -> None:
        """A length-delimited value of a known field (one of another type is an unknown field
        to the parser, and so it is here)."""
        if field.type == FieldDescriptor.TYPE_STRING:
            if self._check_utf8 and not _utf8(body):
                raise _Stop(name, "is not valid UTF-8")
        elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
            self.message(body, field.message_type, name, depth + 1)
        elif field.is_repeated and field.type not in _NOT_PACKABLE:
            self._packed(body, field, name.rpartition("[")[0])

    def _packed(self, body: memoryview, field: FieldDescriptor, name: str) -> None:
        size = _FIXED_SIZE.get(field.type)
        if size is not None:
            if len(body) % size:
                raise _Stop(name, "is cut short")
            self._count(name, len(body) // size)
            return
        if len(body) > 10 * (self._left + 1):  # more varints than are left, whatever they are
            self._count(name, len(body) // 10)
        if body and body[-1] >= 0x80:
            raise _Stop(name, "is cut short")
        self._count(name, len(bytes(body).translate(None, _HIGH_BYTES)))  # varints end < 0x80

    def _skip(self, view: memoryview, pos: int, tag: int, name: str, depth: int) -> int:
        """The position after the value of `tag` (not length-delimited) that starts at `pos`."""
        wire = tag & 7
        if wire == _VARINT:
            return _varint(view, pos, name)[1]
        if wire in (_I64, _I32):
            end = pos + (8 if wire == _I64 else 4)
            if end > len(view):
                raise _Stop(name, "is cut short")
            return end
        if wire == _SGROUP:
            return self._group(view, pos, tag >> 3, name, depth + 1)
        raise _Stop(name, f"has an invalid wire type {wire}")

    def _group(self, view: memoryview, pos: int, number: int, name: str, depth: int) -> int:
        if depth > self._max_depth:
            raise _Stop(name, f"is nested deeper than {self._max_depth} messages")
        while True:
            tag, pos = _varint(view, pos, name)
            self._count(name)
            if tag & 7 == _EGROUP:
                if tag >> 3 != number:
                    raise _Stop(name, "has a group that ends with another field number")
                return pos
            if tag & 7 == _LEN:
                length, pos = _varint(view, pos, name)
                if length > len(view) - pos:
                    raise _Stop(name, "is cut short")
                pos += length
            else:
                pos = self._skip(view, pos, tag, name, depth)


def _varint(view: memoryview, pos: int, name: str) -> tuple[int, int]:
    result = shift = 0
    while pos < len(view):
        byte = view[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Stop(name, "has a varint longer than 10 bytes")
    raise _Stop(name, "is cut short")


def _utf8(body: memoryview) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for start in range(0, len(body), _UTF8_CHUNK):
            decoder.decode(body[start : start + _UTF8_CHUNK])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True
