"""The render pool with real processes: recycling, a crashing process, admission by megapixels."""

from __future__ import annotations

import asyncio
import io
import os
import signal
from collections.abc import Callable

import pytest
from PIL import Image

from imaging_service.errors import RenderUnavailable
from imaging_service.pool import RenderPool
from imaging_service.render import ImageRejected, Limits, render
from tests.corpus import read

BIG = "geom_exactly_50mp_10000x5000.png"  # 50 MP greyscale: about 50 MB while it decodes
PHOTO = "photo_china_original.jpg"  # 0.27 MP


async def until(condition: Callable[[], bool], what: str, deadline: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        if loop.time() > end:
            pytest.fail(f"gave up waiting until {what}")
        await asyncio.sleep(0.002)  # poll until the deadline


def rss_mb(pid: int) -> float:
    """Resident memory of a process, 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def dead(pid: int) -> bool:
    """Gone, or a zombie: its memory and files are released."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (40, 90, 160)).save(out, "JPEG")
    return out.getvalue()


async def test_renders_what_the_renderer_renders() -> None:
    pool = RenderPool(2, Limits())
    try:
        thumbs = await pool.render(read(PHOTO), (100, 48))
        assert thumbs == render(read(PHOTO), (100, 48))
        with pytest.raises(ImageRejected, match="TRUNCATED"):
            await pool.render(read("bad_truncated_50pct.jpg"))
        with pytest.raises(ValueError):
            await pool.render(read(PHOTO), (0,))
    finally:
        await pool.close()


async def test_an_image_refused_by_its_header_never_reaches_a_process() -> None:
    pool = RenderPool(1, Limits())
    try:
        for name in ("bomb_png_20000x20000.png", "bad_vector.svg", "bad_empty.jpg"):
            with pytest.raises(ImageRejected):
                await pool.render(read(name))
        assert pool.pids() == []
    finally:
        await pool.close()


async def test_each_process_is_replaced_after_its_quota_of_renders() -> None:
    pool = RenderPool(1, Limits(), max_tasks_per_child=3)
    try:
        served = []  # the process that rendered each time
        for _ in range(7):
            (before,) = pool.pids() or (None,)
            await pool.render(read(PHOTO), (32,))
            served.append(before or pool.pids()[0])
        first, second, third = served[0], served[3], served[6]
        assert served == [first] * 3 + [second] * 3 + [third]
        assert len({first, second, third}) == 3
        assert not exists(first) and not exists(second)
        # The replacement is started as soon as its predecessor stops, ready for the next render.
        assert pool.pids() == [third]
    finally:
        await pool.close()


@pytest.mark.parametrize("signum", [signal.SIGSEGV, signal.SIGKILL])
async def test_a_dying_process_fails_only_its_own_render(signum: signal.Signals) -> None:
    pool = RenderPool(2, Limits(), max_megapixels_in_flight=200)
    try:
        jobs = [asyncio.create_task(pool.render(read(BIG))) for _ in range(2)]
        # Both processes are in the middle of decoding the 50 MP picture.
        await until(
            lambda: len(pool.pids()) == 2 and all(rss_mb(pid) > 30 for pid in pool.pids()),
            "both processes decode",
        )
        victim = pool.pids()[0]
        os.kill(victim, signum)
        outcomes = await asyncio.gather(*jobs, return_exceptions=True)
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(failed) == 1 and isinstance(failed[0], RenderUnavailable)
        assert [len(o) for o in outcomes if isinstance(o, list)] == [3]
        # The pool goes on, with a new process in place of the dead one.
        for _ in range(4):
            assert len(await pool.render(read(PHOTO), (32,))) == 1
        assert victim not in pool.pids() and len(pool.pids()) == 2
    finally:
        await pool.close()


async def test_a_process_killed_while_idle_is_replaced_before_the_next_render() -> None:
    pool = RenderPool(1, Limits())
    try:
        await pool.render(read(PHOTO), (32,))
        (idle,) = pool.pids()
        os.kill(idle, signal.SIGKILL)
        await until(lambda: dead(idle), "the process is dead")
        assert len(await pool.render(read(PHOTO), (32,))) == 1
        assert pool.pids() != [idle]
    finally:
        await pool.close()


async def test_renders_wait_for_megapixels_not_for_a_free_process() -> None:
    pool = RenderPool(3, Limits(), max_megapixels_in_flight=60)
    try:
        finished: list[str] = []
        big = asyncio.create_task(pool.render(read(BIG)))
        big.add_done_callback(lambda _: finished.append("50 MP"))
        await until(lambda: pool.megapixels_in_flight == 50, "the 50 MP render is admitted")
        # A small photo fits beside it: both are in flight at once.
        small = asyncio.create_task(pool.render(read(PHOTO)))
        await until(lambda: pool.megapixels_in_flight > 50 or small.done(), "the photo is admitted")
        assert pool.megapixels_in_flight == pytest.approx(50 + 640 * 427 / 1e6) or big.done()
        # 12 MP do not fit beside 50 within 60: that render waits, though a process is free.
        phone = asyncio.create_task(pool.render(jpeg(4000, 3000)))
        phone.add_done_callback(lambda _: finished.append("12 MP"))
        peak = 0.0
        while not phone.done():
            peak = max(peak, pool.megapixels_in_flight)
            await asyncio.sleep(0.002)  # poll the gauge while the render runs
        await asyncio.gather(big, small, phone)
        assert finished == ["50 MP", "12 MP"]
        assert peak <= 60
        assert pool.megapixels_in_flight == 0
    finally:
        await pool.close()


async def test_a_render_larger_than_the_whole_budget_runs_alone() -> None:
    pool = RenderPool(2, Limits(), max_megapixels_in_flight=10)
    try:
        big = asyncio.create_task(pool.render(read(BIG)))
        await until(lambda: pool.megapixels_in_flight == 10, "the 50 MP render is admitted")
        small = asyncio.create_task(pool.render(read(PHOTO)))
        assert len(await big) == 3 and len(await small) == 3
    finally:
        await pool.close()


async def test_close_finishes_running_renders_then_refuses() -> None:
    pool = RenderPool(1, Limits())
    running = asyncio.create_task(pool.render(read(BIG)))
    await until(lambda: bool(pool.pids()) and rss_mb(pool.pids()[0]) > 30, "the render runs")
    (pid,) = pool.pids()
    waiting = asyncio.create_task(pool.render(read(PHOTO)))
    await pool.close()
    assert len(await running) == 3
    with pytest.raises(RenderUnavailable):
        await waiting
    with pytest.raises(RenderUnavailable):
        await pool.render(read(PHOTO))
    assert pool.pids() == [] and not exists(pid)
