"""Admission by cost: who runs at once, who waits, in what order."""

from __future__ import annotations

import asyncio

import pytest

from imaging_service.pool import MegapixelBudget


async def settle() -> None:
    """Let every task that can run do so (no time passes)."""
    for _ in range(10):
        await asyncio.sleep(0)  # yield to ready tasks; no time passes, nothing to poll


async def test_renders_that_fit_together_are_admitted_at_once() -> None:
    budget = MegapixelBudget(60)
    assert await budget.acquire(50) == 50
    assert await budget.acquire(0.3) == 0.3
    assert budget.in_use == pytest.approx(50.3)


async def test_a_render_that_does_not_fit_waits_for_a_release() -> None:
    budget = MegapixelBudget(60)
    await budget.acquire(50)
    phone = asyncio.create_task(budget.acquire(12))
    await settle()
    assert not phone.done()
    budget.release(50)
    assert await phone == 12
    assert budget.in_use == 12


async def test_arrival_order_is_kept_so_a_large_render_is_not_starved() -> None:
    budget = MegapixelBudget(60)
    await budget.acquire(50)
    large = asyncio.create_task(budget.acquire(40))
    await settle()
    small = asyncio.create_task(budget.acquire(1))  # would fit, but arrived after the large one
    await settle()
    assert not large.done() and not small.done()
    budget.release(50)
    assert await large == 40 and await small == 1


async def test_a_render_above_the_whole_budget_runs_alone() -> None:
    budget = MegapixelBudget(60)
    assert await budget.acquire(200) == 60
    other = asyncio.create_task(budget.acquire(0.1))
    await settle()
    assert not other.done()
    budget.release(60)
    assert await other == 0.1


async def test_a_cancelled_wait_lets_the_next_in_line_through() -> None:
    budget = MegapixelBudget(60)
    await budget.acquire(50)
    large = asyncio.create_task(budget.acquire(40))
    await settle()
    small = asyncio.create_task(budget.acquire(5))
    await settle()
    large.cancel()
    assert await small == 5
    assert budget.in_use == 55


async def test_a_caller_cancelled_as_it_is_admitted_gives_its_share_back() -> None:
    budget = MegapixelBudget(60)
    await budget.acquire(50)
    waiting = asyncio.create_task(budget.acquire(40))
    await settle()
    budget.release(50)  # admits ``waiting``, which has not run yet
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert budget.in_use == 0


def test_the_budget_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MegapixelBudget(0)
