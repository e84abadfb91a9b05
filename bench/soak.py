"""Soak: 5,000 renders through the render pool; does the pool's memory stay flat?

Usage: python bench/soak.py [--renders 5000] [--processes N] [--max-tasks-per-child 500]

Renders a mix of avatars (the bench photos at 0.3 and 12 MP, and transparent, CMYK, 16-bit,
palette, animated and WebP files of the shared test images) with as many renders in flight as
there are processes, as the worker does. Prints the total resident memory (VmRSS) of the pool's
render processes after 500 and after all renders, and their ratio, which must be at most 1.10;
also the peak total sampled during the first 500 renders and during the last 500, which compares
the processes at work rather than at one instant. Exits 1 when the ratio is above 1.10.

With the default recycling a process lives 500 renders, so the last figure is of young
processes; --max-tasks-per-child 1000000 shows what the same two processes do over the whole
run.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
from pathlib import Path

import photos

from imaging_service.pool import MAX_TASKS_PER_CHILD, RenderPool
from imaging_service.render import Limits

CORPUS_FILES = (
    "mode_RGBA_cutout.png",
    "mode_cmyk.jpg",
    "mode_I16_camera.png",
    "mode_P_transparent.gif",
    "anim_pan.gif",
    "photo_astronaut_400_q80.webp",
    "icc_adobergb_like.jpg",
    "exif_orientation_8_photo.jpg",
)
FIRST_CHECKPOINT = 500
MAX_RATIO = 1.10


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def pool_rss(pool: RenderPool) -> float:
    return sum(rss_mb(pid) for pid in pool.pids())


async def settled_rss(pool: RenderPool) -> float:
    """The pool's RSS once the processes, done with their last render, stop shrinking (a
    process past render_process.TRIM_ABOVE_BYTES hands freed memory back after answering)."""
    last = pool_rss(pool)
    for _ in range(100):
        await asyncio.sleep(0.01)
        now = pool_rss(pool)
        if now == last:
            break
        last = now
    return last


async def soak(args: argparse.Namespace) -> int:
    mix = [data for files in photos.classes().values() for data in files.values()]
    mix += [(photos.testdata_dir() / name).read_bytes() for name in CORPUS_FILES]
    pool = RenderPool(args.processes, Limits(), max_tasks_per_child=args.max_tasks_per_child)
    jobs = itertools.cycle(mix)
    done = 0
    peaks = {"first": 0.0, "last": 0.0}

    async def run(count: int) -> None:
        """``count`` renders, ``processes`` at a time; returns when all have finished."""
        remaining = count

        async def submitter() -> None:
            nonlocal remaining, done
            while remaining > 0:
                remaining -= 1
                await pool.render(next(jobs))
                done += 1
                phase = "first" if done <= FIRST_CHECKPOINT else "last"
                if phase == "first" or done > args.renders - FIRST_CHECKPOINT:
                    peaks[phase] = max(peaks[phase], pool_rss(pool))
                if done % 500 == 0:
                    print(f"{done} renders, pool RSS {pool_rss(pool):.1f} MB", file=sys.stderr)

        await asyncio.gather(*(submitter() for _ in range(pool.processes)))

    rss = {}
    try:  # measured with nothing in flight
        await run(FIRST_CHECKPOINT)
        rss["first"] = await settled_rss(pool)
        await run(args.renders - FIRST_CHECKPOINT)
        rss["last"] = await settled_rss(pool)
    finally:
        await pool.close()
    ratio = rss["last"] / rss["first"]
    print(
        f"{pool.processes} render processes, a process replaced after "
        f"{args.max_tasks_per_child} renders, {done} renders"
    )
    print(f"peak pool RSS during renders 1-{FIRST_CHECKPOINT}: {peaks['first']:.1f} MB")
    print(
        f"peak pool RSS during renders {done - FIRST_CHECKPOINT + 1}-{done}: "
        f"{peaks['last']:.1f} MB (ratio {peaks['last'] / peaks['first']:.2f})"
    )
    print(f"pool RSS after {FIRST_CHECKPOINT} renders: {rss['first']:.1f} MB")
    print(f"pool RSS after {done} renders: {rss['last']:.1f} MB")
    print(f"ratio: {ratio:.2f} (at most {MAX_RATIO})")
    return 0 if ratio <= MAX_RATIO else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--renders", type=int, default=5000)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-tasks-per-child", type=int, default=MAX_TASKS_PER_CHILD)
    return asyncio.run(soak(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
