"""GIF: extension blocks, frames and their sub-blocks, to the trailer."""

from __future__ import annotations

import re
import struct
from functools import cache

from image_policy.walk import Walk

_METADATA_LABELS = frozenset({0xFE, 0xFF, 0x01})  # comment, application, plain text extensions
_BLOCK_START = re.compile(rb"[\x21\x2c\x3b]")
_BLOCKS = "GIF blocks"
_SUB_BLOCKS_PER_STEP = 16


def scan_gif(walk: Walk) -> None:
    view = walk.view
    size = len(view)
    if size < 13:
        return
    walk.width, walk.height, flags = struct.unpack_from("<HHB", view, 6)
    pos = 13 + _colour_table(flags)
    while pos < size:
        introducer = view[pos]
        if introducer == 0x21 and pos + 2 <= size:
            label = view[pos + 1]
            if walk.frames:
                walk.step(_BLOCKS)
            else:
                walk.header("GIF extension blocks")
            data = pos + 2
            pos = _skip_sub_blocks(walk, data, each=not walk.frames)
            if label in _METADATA_LABELS:
                walk.metadata("GIF comments and application extensions", pos - data)
        elif introducer == 0x2C and pos + 11 <= size:
            walk.step(_BLOCKS)
            walk.frame("GIF frames")
            left, top, width, height, flags = struct.unpack_from("<HHHHB", view, pos + 1)
            if walk.frames == 1:  # Pillow widens the image to hold the first frame
                walk.width = max(walk.width, left + width)
                walk.height = max(walk.height, top + height)
            pos = _skip_sub_blocks(walk, pos + 11 + _colour_table(flags), each=False)
        elif introducer == 0x3B:
            return
        else:
            pos = _skip_stray_bytes(walk, pos)


def _colour_table(flags: int) -> int:
    return 3 << ((flags & 7) + 1) if flags & 0x80 else 0


def _skip_sub_blocks(walk: Walk, pos: int, each: bool) -> int:
    """The position after the terminator of the sub-blocks at ``pos``.

    A run of sub-blocks of one size is skipped at C speed (about 10 ns a sub-block), never
    further than the steps left allow. When ``each``, every sub-block counts as a step (Pillow's
    header parser reads them one at a time, in Python), else every 16th: encoders write 255 or
    254 bytes a sub-block, 5,200 steps for 20 MiB of image data.
    """
    view = walk.view
    size = len(view)
    per_step = 1 if each else _SUB_BLOCKS_PER_STEP
    while pos < size:
        length = view[pos]
        if length == 0:
            return pos + 1
        most = (walk.steps_left() + 1) * per_step
        run = _run(length).match(view, pos, min(size, pos + most * (length + 1)))
        if run is None:
            return size  # cut short
        blocks = (run.end() - pos) // (length + 1)
        walk.step(_BLOCKS, -(-blocks // per_step))
        pos = run.end()
    return size


@cache
def _run(length: int) -> re.Pattern[bytes]:
    """Consecutive sub-blocks of ``length`` bytes (encoders write 255 or 254 but the last)."""
    return re.compile(rb"(?s)(?:%s.{%d})++" % (re.escape(bytes([length])), length))


def _skip_stray_bytes(walk: Walk, pos: int) -> int:
    """Pillow skips bytes between blocks one at a time, in Python."""
    found = _BLOCK_START.search(walk.view, pos + 1)
    end = found.start() if found else len(walk.view)
    if walk.frames:
        walk.step(_BLOCKS)
    else:
        walk.header("GIF blocks and stray bytes", end - pos)
    return end
