"""The wire-format walker: it names the bad field, bounds what a request may build, and agrees
with the protobuf parser on what is a valid message."""

from __future__ import annotations

import pytest
from accounts.v1 import accounts_pb2
from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st
from imaging.v1 import imaging_pb2

from grpc_guard.wire import Problem, find_problem

CREATE = accounts_pb2.CreateUserRequest.DESCRIPTOR
UPDATE_THUMBNAILS = accounts_pb2.UpdateThumbnailsRequest.DESCRIPTOR
RENDER = imaging_pb2.RenderThumbnailsRequest.DESCRIPTOR


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def scalar(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def test_valid_requests_have_no_problem() -> None:
    request = accounts_pb2.CreateUserRequest(
        email="zoë@example.com", display_name="Zoë ✓", avatar_image=b"\xff\xd8\xff", request_id="r"
    )
    assert find_problem(request.SerializeToString(), CREATE) is None
    assert find_problem(b"", CREATE) is None


def test_invalid_utf8_is_found_in_the_field_that_holds_it() -> None:
    data = field(1, b"a@example.com") + field(2, b"caf\xe9")
    assert find_problem(data, CREATE) == Problem("display_name", "is not valid UTF-8")
    assert find_problem(data, CREATE, check_utf8=False) is None


def test_nested_fields_are_named_by_their_path() -> None:
    failure = field(1, b"TRUNCATED") + field(2, b"bad \xc3\x28 reason")
    data = field(1, b"6f1c2a57-0000-4000-8000-000000000000") + field(4, failure)
    assert find_problem(data, UPDATE_THUMBNAILS) == Problem("failure.reason", "is not valid UTF-8")
    small = field(1, b"thumbnails/\xff/small.png")
    data = field(3, field(1, small))
    assert find_problem(data, UPDATE_THUMBNAILS) == Problem(
        "thumbnails.small.object", "is not valid UTF-8"
    )


def test_repeated_fields_are_named_with_their_index() -> None:
    reply = imaging_pb2.RenderThumbnailsResponse.DESCRIPTOR
    good = field(4, b"image/png")
    data = field(1, good) + field(1, good) + field(1, field(4, b"image/\x80"))
    assert find_problem(data, reply) == Problem("thumbnails[2].content_type", "is not valid UTF-8")


def test_unknown_fields_and_other_wire_types_are_skipped_as_the_parser_does() -> None:
    # Field 99 is unknown; email (1) sent as a varint is an unknown field to the parser too.
    data = field(99, b"\xff\xfe") + scalar(1, 5) + field(2, b"ok")
    assert find_problem(data, CREATE) is None
    accounts_pb2.CreateUserRequest.FromString(data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (field(1, b"a@b.c")[:-2], Problem("email", "is cut short")),
        (b"\x0a", Problem("email", "is cut short")),  # a tag, then nothing
        (b"\x80", Problem("", "is cut short")),  # half a tag
        (b"\x0f", Problem("email", "has an invalid wire type 7")),
        (b"\x00\x00", Problem("", "has an invalid field number 0")),
        (b"\x0a" + b"\xff" * 10 + b"\x01", Problem("email", "has a varint longer than 10 bytes")),
        (b"\x0c", Problem("email", "has an invalid wire type 4")),  # a stray end of group
    ],
)  # fmt: skip
def test_malformed_input_is_named_where_it_breaks(data: bytes, expected: Problem) -> None:
    assert find_problem(data, CREATE) == expected
    with pytest.raises(DecodeError):
        accounts_pb2.CreateUserRequest.FromString(data)


def test_groups_in_unknown_fields_are_walked_to_their_end() -> None:
    group = varint(50 << 3 | 3) + scalar(1, 7) + field(2, b"x") + varint(50 << 3 | 4)
    assert find_problem(group + field(1, b"a@b.c"), CREATE) is None
    mismatched = varint(50 << 3 | 3) + varint(51 << 3 | 4)
    assert find_problem(mismatched, CREATE) == Problem(
        "", "has a group that ends with another field number"
    )


def test_packed_elements_count_so_a_small_request_cannot_build_a_huge_one() -> None:
    ok = field(2, bytes([100]) * 10)
    assert find_problem(ok, RENDER) is None
    flood = field(2, bytes([100]) * 20_001)  # 20 kB on the wire, 20,001 integers parsed
    problem = find_problem(flood, RENDER, max_elements=20_000)
    assert problem == Problem("sizes", "takes the request past 20000 fields and elements")
    huge = field(2, bytes([1]) * 5_000_000)  # counted without a Python loop over 5 MB
    assert find_problem(huge, RENDER) is not None
    multi_byte = field(2, varint(300) * 5)  # 5 elements of 2 bytes each
    assert find_problem(multi_byte, RENDER, max_elements=5) == Problem(
        "sizes", "takes the request past 5 fields and elements"
    )
    assert find_problem(multi_byte, RENDER, max_elements=6) is None


def test_a_packed_varint_cut_in_the_middle_is_malformed() -> None:
    assert find_problem(field(2, b"\x64\x80"), RENDER) == Problem("sizes", "is cut short")
    with pytest.raises(DecodeError):
        imaging_pb2.RenderThumbnailsRequest.FromString(field(2, b"\x64\x80"))


def test_fields_count_and_nesting_is_bounded() -> None:
    many = scalar(99, 1) * 101
    assert find_problem(many, CREATE, max_elements=100) == Problem(
        "", "takes the request past 100 fields and elements"
    )
    value = struct_pb2.Value(string_value="leaf")
    for _ in range(40):
        value = struct_pb2.Value(list_value=struct_pb2.ListValue(values=[value]))
    problem = find_problem(value.SerializeToString(), struct_pb2.Value.DESCRIPTOR, max_depth=32)
    assert problem is not None and problem.description == "is nested deeper than 32 messages"
    assert problem.field.startswith("list_value.values[0].list_value.values[0]")


SEEDS: list[tuple[Descriptor, type, bytes]] = [
    (
        CREATE,
        accounts_pb2.CreateUserRequest,
        accounts_pb2.CreateUserRequest(
            email="a@b.c", display_name="Zoë", avatar_image=b"\xff\xd8", request_id="r"
        ).SerializeToString(),
    ),
    (
        UPDATE_THUMBNAILS,
        accounts_pb2.UpdateThumbnailsRequest,
        accounts_pb2.UpdateThumbnailsRequest(
            user_id="u", avatar_generation=3, failure=accounts_pb2.Failure(code="X", reason="é")
        ).SerializeToString(),
    ),
    (
        RENDER,
        imaging_pb2.RenderThumbnailsRequest,
        imaging_pb2.RenderThumbnailsRequest(
            image=b"12", sizes=[100, 300, 70000]
        ).SerializeToString(),
    ),
    (
        struct_pb2.Value.DESCRIPTOR,
        struct_pb2.Value,
        struct_pb2.Value(
            struct_value=struct_pb2.Struct(fields={"k": struct_pb2.Value(string_value="v")})
        ).SerializeToString(),
    ),
]


@settings(max_examples=2000, deadline=None)
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(st.tuples(st.integers(0, 64), st.integers(0, 255), st.booleans()), max_size=4),
    cut=st.integers(0, 64),
)
def test_the_walker_agrees_with_the_parser_on_damaged_messages(
    seed: tuple[Descriptor, type, bytes], edits: list[tuple[int, int, bool]], cut: int
) -> None:
    descriptor, message, original = seed
    data = bytearray(original)
    for position, byte, insert in edits:
        if insert:
            data.insert(min(position, len(data)), byte)
        elif data:
            data[position % len(data)] = byte
    data = data[: len(data) - cut % (len(data) + 1)] if cut % 3 == 0 else data
    try:
        message.FromString(bytes(data))  # type: ignore[attr-defined]
        parses = True
    except DecodeError:
        parses = False
    assert (find_problem(bytes(data), descriptor) is None) == parses
