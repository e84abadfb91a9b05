"""Pre-scan benchmark: its CPU time and memory on every hostile class and on legitimate files.

Usage: python bench/prescan.py [--size BYTES] [--rounds 5]       (make bench-prescan)

Runs ``image_policy.prescan`` over every hostile class of tests/hostile.py and every worst case
shaped to cost it the most, each built at the byte limit (20 MiB, for time) and at 256 KiB (where
memory held per structure would show most), and over the shared corpus. Prints, per file, the
verdict, the CPU time (process time, best of ``--rounds``; the first, cold run beside it) and
the peak memory allocated during one scan (tracemalloc), also as a multiple of the file's size.
Exits 1 if any scan takes more than 50 ms of CPU or allocates more than 3x the file's size (plus
64 KiB for the scan's own small objects), or if a hostile class is not refused.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.hostile, tests.corpus

from image_policy.prescan import ScanLimits, TooComplex, prescan
from tests.corpus import manifest, read
from tests.hostile import HOSTILE, SCAN_WORST_CASES

CPU_LIMIT_MS = 50.0
MEMORY_LIMIT = 3.0  # times the file's size
MEMORY_ALLOWANCE = 64 * 1024  # whatever the size: a few hundred counters and offsets
SMALL = 256 * 1024


def scan(data: bytes) -> str:
    try:
        structure = prescan(data)
    except TooComplex as exc:
        return f"TOO_COMPLEX: {exc.reason}"
    return f"{structure.format} {structure.width}x{structure.height} x{structure.frames}"


def cpu_ms(data: bytes, rounds: int) -> tuple[float, float]:
    """(best, first) process time of one scan, in ms."""
    times = []
    for _ in range(rounds):
        start = time.process_time()
        scan(data)
        times.append((time.process_time() - start) * 1000)
    return min(times), times[0]


def peak_bytes(data: bytes) -> int:
    tracemalloc.start()
    try:
        scan(data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def measure(name: str, data: bytes, rounds: int, must_refuse: bool) -> bool:
    verdict = scan(data)
    best, first = cpu_ms(data, rounds)
    peak = peak_bytes(data)
    ratio = peak / max(len(data), 1)
    problems = []
    if best > CPU_LIMIT_MS:
        problems.append(f"over {CPU_LIMIT_MS:.0f} ms")
    if peak > MEMORY_LIMIT * len(data) + MEMORY_ALLOWANCE:
        problems.append(f"over {MEMORY_LIMIT:.0f}x its size in memory")
    if must_refuse and not verdict.startswith("TOO_COMPLEX"):
        problems.append("not refused")
    flag = f"  MISSED: {', '.join(problems)}" if problems else ""
    print(
        f"{name:34} {len(data):>10,} {best:7.2f} {first:7.2f} {peak / 1024:9.0f} "
        f"{ratio:6.3f}  {verdict}{flag}"
    )
    return not problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=ScanLimits().max_bytes)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(
        f"{'file':34} {'bytes':>10} {'cpu_ms':>7} {'cold':>7} {'peak_KiB':>9} {'xsize':>6}  verdict"
    )
    ok = True
    built: list[tuple[str, Callable[[int], bytes], bool]] = [
        *((h.name, h.build, args.size >= h.min_size) for h in HOSTILE),
        *((name, build, False) for name, build in SCAN_WORST_CASES),
    ]
    for name, build, must_refuse in built:
        ok &= measure(name, build(args.size), args.rounds, must_refuse)
    for name, build, _ in built:
        ok &= measure(f"{name}@small", build(SMALL), args.rounds, False)
    for entry in manifest()["files"]:
        data = read(entry["name"])
        if len(data) <= args.size:
            ok &= measure(f"corpus/{entry['name']}", data, args.rounds, False)
    print("all within 50 ms of CPU and 3x the file size" if ok else "a target was missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
