"""The bound on RenderThumbnails' renders: refused at once past it, counted until a render ends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from imaging_service.errors import Overloaded
from imaging_service.render import Thumbnail
from imaging_service.servicer import Previews


class HeldPool:
    """Renders only once ``release`` is set; says when each render starts and ends."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: asyncio.Queue[bytes] = asyncio.Queue()
        self.finished = 0

    async def render(self, data: bytes, sizes: Sequence[int]) -> list[Thumbnail]:
        self.started.put_nowait(data)
        await self.release.wait()
        self.finished += 1
        return [Thumbnail(size, b"png") for size in sizes]


async def until(condition: Callable[[], bool], what: str, deadline: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        if loop.time() > end:
            pytest.fail(f"gave up waiting until {what}")
        await asyncio.sleep(0.001)  # poll until the deadline


def previews(pool: HeldPool, limit: int) -> Previews:
    pool_like: Any = pool
    return Previews(pool_like, limit)


async def test_past_the_limit_a_preview_is_refused_at_once_not_queued() -> None:
    pool = HeldPool()
    bound = previews(pool, 2)
    running = [asyncio.create_task(bound.render(name, (16,))) for name in (b"a", b"b")]
    assert {await pool.started.get(), await pool.started.get()} == {b"a", b"b"}
    with pytest.raises(Overloaded) as refused:
        await bound.render(b"c", (16,))
    assert refused.value.retry_after == 1.0
    assert "2 previews" in str(refused.value)
    assert pool.started.empty() and bound.in_flight == 2
    pool.release.set()
    assert [len(await task) for task in running] == [1, 1]
    await until(lambda: bound.in_flight == 0, "both slots are free")
    assert await bound.render(b"d", (16, 32)) == [Thumbnail(16, b"png"), Thumbnail(32, b"png")]


async def test_a_caller_who_stops_waiting_keeps_the_slot_until_the_render_ends() -> None:
    pool = HeldPool()
    bound = previews(pool, 1)
    caller = asyncio.create_task(bound.render(b"a", (16,)))
    await pool.started.get()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    # The render goes on in its process: a second caller cannot start another one beside it.
    with pytest.raises(Overloaded):
        await bound.render(b"b", (16,))
    pool.release.set()
    await until(lambda: bound.in_flight == 0, "the abandoned render ends")
    assert pool.finished == 1
    assert len(await bound.render(b"c", (16,))) == 1


def test_the_limit_is_at_least_one() -> None:
    with pytest.raises(ValueError):
        previews(HeldPool(), 0)
