"""How to write the thumbnails' PNGs: bytes against encoding time, for the choice in render.py.

Usage: python bench/png_choice.py [--rounds 5] [--cpu 0]

Takes our 100, 200 and 400 px thumbnails of every bench picture (both classes), and encodes them
again with each candidate; prints, per candidate, the bytes of an avatar's three PNGs and the
CPU ms to encode them (median of the rounds, one core), each the mean over the pictures.
Candidates: Pillow's own encoder (it picks a filter for every row by trying all five) at several
zlib levels and strategies, and a fixed filter for every row computed with ImageChops and
compressed by zlib, as render.py does.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import struct
import time
import zlib
from collections.abc import Callable

import photos
from PIL import Image, ImageChops

from imaging_service.render import render

Encoder = Callable[[Image.Image], bytes]


def pillow(level: int, strategy: int) -> Encoder:
    def encode(img: Image.Image) -> bytes:
        out = io.BytesIO()
        img.save(out, "PNG", compress_level=level, compress_type=strategy)
        return out.getvalue()

    return encode


def shifted(img: Image.Image, dx: int, dy: int) -> Image.Image:
    moved = Image.new(img.mode, img.size)
    moved.paste(img, (dx, dy))
    return moved


FILTERS: dict[int, Callable[[Image.Image], Image.Image]] = {
    0: lambda img: img,
    1: lambda img: ImageChops.subtract_modulo(img, shifted(img, 1, 0)),
    2: lambda img: ImageChops.subtract_modulo(img, shifted(img, 0, 1)),
    3: lambda img: ImageChops.subtract_modulo(
        img, ImageChops.add(shifted(img, 1, 0), shifted(img, 0, 1), scale=2.0)
    ),
}


def fixed(filter_type: int, level: int, strategy: int) -> Encoder:
    def encode(img: Image.Image) -> bytes:
        width, height = img.size
        rows = Image.new("L", (4 * width + 1, height), filter_type)
        filtered = FILTERS[filter_type](img).tobytes()
        rows.paste(Image.frombytes("L", (4 * width, height), filtered), (1, 0))
        packer = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS, 9, strategy)
        idat = packer.compress(rows.tobytes()) + packer.flush()
        ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + b"".join(
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
            for kind, body in ((b"IHDR", ihdr), (b"IDAT", idat), (b"IEND", b""))
        )

    return encode


RLE, HUFFMAN, DEFAULT = zlib.Z_RLE, zlib.Z_HUFFMAN_ONLY, zlib.Z_DEFAULT_STRATEGY
CANDIDATES: dict[str, Encoder] = {
    "Pillow, adaptive filter, level 1": pillow(1, DEFAULT),
    "Pillow, adaptive filter, level 3": pillow(3, DEFAULT),
    "Pillow, adaptive filter, level 6 (zlib default)": pillow(6, DEFAULT),
    "Pillow, adaptive filter, Z_RLE": pillow(6, RLE),
    "fixed None, level 6 (as sharp writes)": fixed(0, 6, DEFAULT),
    "fixed None, Z_RLE": fixed(0, 6, RLE),
    "fixed Sub, Z_RLE": fixed(1, 6, RLE),
    "fixed Up, Z_RLE": fixed(2, 6, RLE),
    "fixed Up, Z_HUFFMAN_ONLY": fixed(2, 6, HUFFMAN),
    "fixed Up, level 1": fixed(2, 1, DEFAULT),
    "fixed Average, Z_RLE": fixed(3, 6, RLE),
    "fixed Average, Z_HUFFMAN_ONLY": fixed(3, 6, HUFFMAN),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cpu", type=int, default=0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    avatars = [
        [Image.open(io.BytesIO(t.png)).convert("RGBA") for t in render(data)]
        for files in photos.classes().values()
        for data in files.values()
    ]
    for images in avatars:  # every candidate must write exactly these pixels
        for name, encode in CANDIDATES.items():
            back = [Image.open(io.BytesIO(encode(img))).convert("RGBA") for img in images]
            assert [b.tobytes() for b in back] == [i.tobytes() for i in images], name
    print(f"{'candidate':48} {'KB/avatar':>9} {'ms/avatar':>9}")
    for name, encode in CANDIDATES.items():
        rounds = []
        for _ in range(args.rounds):
            start = time.process_time()
            for images in avatars:
                for img in images:
                    encode(img)
            rounds.append((time.process_time() - start) * 1000 / len(avatars))
        size = statistics.mean(sum(len(encode(img)) for img in images) for images in avatars)
        print(f"{name:48} {size / 1000:9.0f} {statistics.median(rounds):9.1f}")


if __name__ == "__main__":
    main()
