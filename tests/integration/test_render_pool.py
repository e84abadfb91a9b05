"""The render pool with real processes: recycling, a crashing process, admission by megapixels,
the time budget, and an environment without secrets."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from imaging_service.budgets import RenderBudget
from imaging_service.errors import RenderUnavailable
from imaging_service.pool import MEASURED_HEAD_BYTES, RenderPool
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


async def test_an_image_refused_by_the_pre_scan_never_reaches_a_process() -> None:
    pool = RenderPool(1, Limits())
    try:
        refused = [read("bomb_png_20000x20000.png"), read("bad_empty.jpg"), scan_bomb(64, 200)]
        codes = []
        for data in refused:
            with pytest.raises(ImageRejected) as rejected:
                await pool.render(data)
            codes.append(rejected.value.code)
        assert codes == ["TOO_MANY_PIXELS", "EMPTY", "TOO_COMPLEX"]
        assert pool.pids() == []
        # What the pre-scan does not judge is the render process's to refuse.
        with pytest.raises(ImageRejected, match="UNSUPPORTED_FORMAT"):
            await pool.render(read("bad_vector.svg"))
        assert len(pool.pids()) == 1
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


def scan_bomb(side: int, extra_scans: int) -> bytes:
    """A progressive JPEG of one colour whose last scan (a luma AC refinement, 14 bytes) comes
    ``extra_scans`` more times: each copy makes the decoder walk every block again (about 2 ms
    per copy at 4 MP here), in a file of a few KB."""
    out = io.BytesIO()
    Image.new("RGB", (side, side), (90, 140, 200)).save(out, "JPEG", progressive=True)
    data = out.getvalue()
    last_scan = data.rindex(b"\xff\xda")
    end = data.rindex(b"\xff\xd9")
    return data[:end] + data[last_scan:end] * extra_scans + data[end:]


async def test_a_count_past_the_head_is_refused_by_the_render_process() -> None:
    # Grain makes the file larger than the head the service scans; the extra scans come after.
    out = io.BytesIO()
    Image.effect_noise((512, 512), 64).convert("RGB").save(out, "JPEG", progressive=True)
    data = out.getvalue()
    last_scan, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    bomb = data[:end] + data[last_scan:end] * 200 + data[end:]
    assert len(data) > MEASURED_HEAD_BYTES
    pool = RenderPool(1, Limits())
    try:
        assert (await pool.measure(bomb)).megapixels == pytest.approx(512 * 512 / 1e6)
        with pytest.raises(ImageRejected) as rejected:
            await pool.render(bomb)
        assert rejected.value.code == "TOO_COMPLEX"
        assert len(pool.pids()) == 1
    finally:
        await pool.close()


async def test_a_render_over_its_budget_is_killed_and_the_next_one_gets_a_new_process() -> None:
    # The bomb takes over 10 s to render; its budget here is 1 s, the photo's render 20 ms.
    bomb = scan_bomb(2000, 5000)
    limits = Limits(max_scans=10_000, max_segments=10_000, max_blocks=100_000)
    pool = RenderPool(1, limits, budget=RenderBudget(floor=1.0, per_megapixel=0.0))
    try:
        await pool.render(read(PHOTO), (32,))
        (first,) = pool.pids()
        with pytest.raises(ImageRejected) as rejected:
            await pool.render(bomb, (32,))
        assert rejected.value.code == "TOO_COMPLEX"
        assert rejected.value.reason == "the render took longer than its budget of 1.0 s for 4.0 MP"
        await until(lambda: dead(first), "the killed process is gone")
        assert pool.pids() != [first] and pool.megapixels_in_flight == 0
        assert len(await pool.render(read(PHOTO), (32,))) == 1
    finally:
        await pool.close()


SECRETS = {
    "INTERNAL_TOKEN": "internal-3b6f",
    "S3_SECRET_KEY": "s3-secret-91ac",
    "S3_ACCESS_KEY": "s3-access-77d0",
    "NATS_URL": "nats://imaging:nats-pass-5e21@127.0.0.1:4222",
    "NATS_PASSWORD": "nats-pass-5e21",
    "DATABASE_URL": "postgresql://u:pg-pass-c4d2@db/accounts",
}
# Starts a pool in a fresh interpreter (the fork server is started once per process, so this
# one must not inherit it from the tests), renders once, and reports what the render process,
# its fork server and the service itself have in their environments.
ENVIRON_PROBE = """
import asyncio, json, os, sys
from imaging_service.pool import RenderPool
from imaging_service.render import Limits

def environ(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return [e.decode() for e in f.read().split(b"\\0") if e]

def parent(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])

async def main():
    pool = RenderPool(1, Limits())
    try:
        await pool.render(open(sys.argv[1], "rb").read(), (32,))
        (pid,) = pool.pids()
        report = {
            "render": environ(pid),
            "fork_server": environ(parent(pid)),
            "service": dict(os.environ),
        }
    finally:
        await pool.close()
    print(json.dumps(report))

asyncio.run(main())
"""


def test_render_processes_start_without_the_services_secrets(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(read(PHOTO))
    env = {**os.environ, **SECRETS, "LC_ALL": "C.UTF-8"}
    done = subprocess.run(
        [sys.executable, "-c", ENVIRON_PROBE, str(photo)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for kind in ("render", "fork_server"):
        names = {entry.partition("=")[0] for entry in report[kind]}
        text = "\n".join(report[kind])
        assert not names & SECRETS.keys(), kind
        assert not [value for value in SECRETS.values() if value in text], kind
        assert {"PATH", "LC_ALL"} <= names, kind  # what the C library and Python read
    # The service's own environment is whole again once the fork server has started.
    assert SECRETS.items() <= report["service"].items()
