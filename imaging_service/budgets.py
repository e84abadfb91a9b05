"""What a render may cost: its time (RenderBudget) and its share of memory (MegapixelBudget)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass

# The peak memory of a render, per decoded megapixel, measured on 50 MP sources: WebP with alpha
# 18.3 MB (916 MB), WebP 15.8, PNG RGBA 11.8, AVIF 9.3, progressive CMYK JPEG 8.2, 16-bit grey
# PNG 7.1, palette PNG 6.2, GIF 4.4, baseline JPEG 0.8 (decoded at 1/8 scale). 80 MP in flight
# keeps the worst case near 1.5 GB of renders, within imaging's 2 GiB with the main process;
# it lets a 50 MP avatar render beside a 30 MP one, or six 12 MP ones at once.
MAX_MEGAPIXELS_IN_FLIGHT = 80


@dataclass(frozen=True)
class RenderBudget:
    """The wall-clock time a render may take, in seconds: ``floor`` plus ``per_megapixel`` for
    each decoded megapixel. The defaults are about four times what a render of that size costs
    with two at once on a busy 2-core machine: 50 MP at most 2.2 s alone (PNG RGBA), so 15 s."""

    floor: float = 5.0
    per_megapixel: float = 0.2

    def __post_init__(self) -> None:
        if not (self.floor > 0 and self.per_megapixel >= 0):
            raise ValueError(f"a render budget needs a positive floor, got {self}")

    def seconds(self, megapixels: float) -> float:
        return self.floor + self.per_megapixel * max(megapixels, 0.0)


class MegapixelBudget:
    """Admission by cost, in arrival order: ``acquire(cost)`` returns once the costs acquired and
    not yet released leave room for ``cost`` within ``capacity`` and every earlier caller has been
    admitted. A cost above the whole capacity counts as the capacity: it runs alone, not never."""

    def __init__(self, capacity: float) -> None:
        if not capacity > 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.in_use = 0.0
        self._waiting: collections.deque[tuple[float, asyncio.Future[None]]] = collections.deque()

    async def acquire(self, cost: float) -> float:
        """Returns the cost to ``release`` later."""
        cost = min(cost, self.capacity)
        if not self._waiting and self._fits(cost):
            self.in_use += cost
            return cost
        turn = asyncio.get_running_loop().create_future()
        entry = (cost, turn)
        self._waiting.append(entry)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release(cost)  # admitted just as the caller was cancelled
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(entry)
                self._admit()  # the next in line may fit now
            raise
        return cost

    def release(self, cost: float) -> None:
        self.in_use = max(self.in_use - cost, 0.0)
        self._admit()

    def _fits(self, cost: float) -> bool:
        return self.in_use + cost <= self.capacity * (1 + 1e-9)  # sums of floats

    def _admit(self) -> None:
        while self._waiting and self._fits(self._waiting[0][0]):
            cost, turn = self._waiting.popleft()
            if not turn.done():
                self.in_use += cost
                turn.set_result(None)
