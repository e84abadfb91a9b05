"""Renderer benchmark: ours against a naive Pillow renderer and the sharp reference, on one core.

Usage: python bench/render.py [--rounds 11] [--cpu 0]     (make bench-render installs sharp first)

Each avatar is the three thumbnails, 100, 200 and 400 px, from the uploaded bytes. The three
renderers run in turn on every picture in every round (the order rotating each round), pinned
to the same core, so that the load of anything else on the machine falls on all of them alike;
the figures are the medians over the rounds of each class's mean per avatar. Times are CPU time
of the renderer's process (Python's process_time; node's process.cpuUsage, all its threads),
which another process on the core does not inflate; wall-clock times are shown beside them.

- ours: imaging_service.render.render (one decode, JPEG at reduced DCT scale);
- naive: Pillow the obvious way, a full decode for each size;
- sharp: the reference pipeline (bench/sharp_render.mjs), sharp.concurrency(1),
  UV_THREADPOOL_SIZE=1, one node process for the whole run.

It ends with one line per class, `class=... ours_ms=... sharp_ms=... ours/sharp=...
png_bytes_ours=... png_bytes_sharp=...` (bytes of the three PNGs of an avatar, mean over the
class), then `renderer class=12mp ours/sharp=... renderer class=0.3mp ours/sharp=...` (also
written to --summary FILE), and exits 1 when a target is missed: ours/sharp <= 0.40 for both
classes, and our PNGs no larger than sharp's.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import photos
from PIL import Image, ImageChops, ImageDraw, ImageOps, ImageStat

from imaging_service.render import render

BENCH = Path(__file__).resolve().parent
SIZES = (100, 200, 400)
TARGETS = {"0.3mp": 0.40, "12mp": 0.40}  # ours/sharp, at most (issue 13)
IMPLS = ("ours", "naive", "sharp")


def ours(data: bytes) -> list[bytes]:
    return [t.png for t in render(data, SIZES)]


def naive(data: bytes) -> list[bytes]:
    """What one writes first with Pillow: decode, orient, fit and mask, once per size."""
    pngs = []
    for size in SIZES:
        img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
        thumb = ImageOps.fit(img.convert("RGBA"), (size, size), Image.Resampling.LANCZOS)
        mask = Image.new("L", (size, size), 0)
        ImageDraw.Draw(mask).ellipse((0, 0, size - 1, size - 1), fill=255)
        thumb.putalpha(ImageChops.multiply(thumb.getchannel("A"), mask))
        out = io.BytesIO()
        thumb.save(out, "PNG")
        pngs.append(out.getvalue())
    return pngs


def timed(renderer: Callable[[bytes], list[bytes]], data: bytes) -> tuple[float, float]:
    """(CPU ms, wall ms) of one avatar."""
    cpu, wall = time.process_time(), time.perf_counter()
    renderer(data)
    return (time.process_time() - cpu) * 1000, (time.perf_counter() - wall) * 1000


class Sharp:
    """The node process running the reference pipeline."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._process = process

    def ask(self, path: Path, out: bool = False) -> dict[str, Any]:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps({"path": str(path), "out": out}) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise SystemExit("the sharp helper died; see its error above")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def timed(self, path: Path) -> tuple[float, float]:
        answer = self.ask(path)
        return float(answer["cpu_ms"]), float(answer["wall_ms"])


@contextmanager
def sharp_helper(cpu: int) -> Iterator[Sharp]:
    if not (BENCH / "node_modules" / "sharp").is_dir():
        raise SystemExit("sharp is not installed: run `npm ci --prefix bench` (make bench-render)")
    process = subprocess.Popen(
        ["node", str(BENCH / "sharp_render.mjs")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "UV_THREADPOOL_SIZE": "1"},
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )
    try:
        if os.sched_getaffinity(process.pid) != {cpu}:
            raise SystemExit(f"could not pin the sharp helper to cpu {cpu}")
        yield Sharp(process)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=30)


def difference(png_a: bytes, png_b: bytes) -> float:
    """Mean absolute RGB difference inside the circle (where both are opaque), 0..255."""
    a, b = (Image.open(io.BytesIO(png)).convert("RGBA") for png in (png_a, png_b))
    inner = [img.getchannel("A").point(lambda v: 255 * (v == 255)) for img in (a, b)]
    opaque = ImageChops.multiply(*inner)
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    return sum(ImageStat.Stat(diff, opaque).mean) / 3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--cpu", type=int, default=0, help="the core to pin everything to")
    parser.add_argument("--summary", type=Path, help="also write the summary line here")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    corpus = photos.classes()
    with tempfile.TemporaryDirectory() as folder, sharp_helper(args.cpu) as sharp:
        paths = {}
        for files in corpus.values():
            for name, data in files.items():
                paths[name] = Path(folder) / name
                paths[name].write_bytes(data)
        facts = describe(corpus, paths, sharp)
        samples = measure(corpus, paths, sharp, args.rounds)
    return report(corpus, facts, samples, args)


def describe(
    corpus: dict[str, dict[str, bytes]], paths: dict[str, Path], sharp: Sharp
) -> dict[str, dict[str, float]]:
    """Per file: megapixels, PNG bytes of each renderer, and how far ours is from sharp's.

    Also the warm-up: every renderer has rendered every file once before timing starts."""
    facts = {}
    for files in corpus.values():
        for name, data in files.items():
            mine, plain = ours(data), naive(data)
            theirs = [base64.b64decode(png) for png in sharp.ask(paths[name], out=True)["pngs"]]
            width, height = Image.open(io.BytesIO(data)).size
            facts[name] = {
                "mp": width * height / 1e6,
                "bytes_ours": sum(map(len, mine)),
                "bytes_naive": sum(map(len, plain)),
                "bytes_sharp": sum(map(len, theirs)),
                "diff_400": difference(mine[-1], theirs[-1]),
            }
    return facts


def measure(
    corpus: dict[str, dict[str, bytes]], paths: dict[str, Path], sharp: Sharp, rounds: int
) -> dict[tuple[str, str, str], list[tuple[float, float]]]:
    """(class or file, renderer, "cpu"/"wall") -> one sample per round."""
    runners: dict[str, Callable[[str, bytes], tuple[float, float]]] = {
        "ours": lambda name, data: timed(ours, data),
        "naive": lambda name, data: timed(naive, data),
        "sharp": lambda name, data: sharp.timed(paths[name]),
    }
    samples: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
    for round_ in range(rounds):
        order = IMPLS[round_ % 3 :] + IMPLS[: round_ % 3]
        for cls, files in corpus.items():
            totals = {impl: [0.0, 0.0] for impl in IMPLS}
            for name, data in files.items():
                for impl in order:
                    cpu, wall = runners[impl](name, data)
                    samples[(name, impl, "file")].append((cpu, wall))
                    totals[impl][0] += cpu / len(files)
                    totals[impl][1] += wall / len(files)
            for impl in IMPLS:
                samples[(cls, impl, "class")].append((totals[impl][0], totals[impl][1]))
        print(f"round {round_ + 1}/{rounds} done", file=sys.stderr)
    return samples


def median(samples: list[tuple[float, float]], which: int) -> float:
    return statistics.median(sample[which] for sample in samples)


def report(
    corpus: dict[str, dict[str, bytes]],
    facts: dict[str, dict[str, float]],
    samples: dict[tuple[str, str, str], list[tuple[float, float]]],
    args: argparse.Namespace,
) -> int:
    print(
        f"CPU ms per avatar (100+200+400 px PNGs), one core (cpu {args.cpu}), "
        f"median of {args.rounds} interleaved rounds"
    )
    header = (
        f"{'class':6} {'file':40} {'MP':>5} {'ours':>7} {'naive':>7} {'sharp':>7} "
        f"{'ours/sharp':>10} {'naive/sharp':>11} {'bytes ours':>10} {'naive':>8} {'sharp':>8} "
        f"{'diff400':>7}"
    )
    print(header)
    lines, failures = [], []
    ratios: dict[str, float] = {}
    for cls, files in corpus.items():
        rows = [(name, name, "file") for name in files] + [(cls, "per avatar", "class")]
        for key, label, kind in rows:
            ms = {impl: median(samples[(key, impl, kind)], 0) for impl in IMPLS}
            chosen = [facts[key]] if kind == "file" else [facts[name] for name in files]
            mean = {
                field: statistics.mean(fact[field] for fact in chosen)
                for field in ("mp", "bytes_ours", "bytes_naive", "bytes_sharp", "diff_400")
            }
            print(
                f"{cls:6} {label:40} {mean['mp']:5.2f} {ms['ours']:7.1f} {ms['naive']:7.1f} "
                f"{ms['sharp']:7.1f} {ms['ours'] / ms['sharp']:10.2f} "
                f"{ms['naive'] / ms['sharp']:11.2f} {mean['bytes_ours']:10.0f} "
                f"{mean['bytes_naive']:8.0f} {mean['bytes_sharp']:8.0f} {mean['diff_400']:7.2f}"
            )
        wall = {impl: median(samples[(cls, impl, "class")], 1) for impl in IMPLS}
        print(
            f"{cls:6} {'per avatar, wall-clock ms':40} {'':5} {wall['ours']:7.1f} "
            f"{wall['naive']:7.1f} {wall['sharp']:7.1f} {wall['ours'] / wall['sharp']:10.2f} "
            f"{wall['naive'] / wall['sharp']:11.2f}"
        )
        ratio = ratios[cls] = ms["ours"] / ms["sharp"]
        bytes_ours, bytes_sharp = round(mean["bytes_ours"]), round(mean["bytes_sharp"])
        if ratio > TARGETS[cls]:
            failures.append(f"{cls}: ours/sharp {ratio:.2f} is above {TARGETS[cls]}")
        if bytes_ours > bytes_sharp:
            failures.append(f"{cls}: our PNGs ({bytes_ours} B) are larger than sharp's")
        lines.append(
            f"class={cls} ours_ms={ms['ours']:.1f} sharp_ms={ms['sharp']:.1f} "
            f"ours/sharp={ratio:.2f} png_bytes_ours={bytes_ours} png_bytes_sharp={bytes_sharp}"
        )
    print("diff400: mean absolute RGB difference (0..255) of our 400 px thumbnail from sharp's")
    for failure in failures:
        print(f"TARGET MISSED: {failure}")
    if not failures:
        print("targets met: ours/sharp <= 0.40 for both classes, PNG bytes <= sharp's")
    print("\n".join(lines))
    summary = " ".join(f"renderer class={c} ours/sharp={ratios[c]:.2f}" for c in ("12mp", "0.3mp"))
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(f"{summary}\n")
    print(summary)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
