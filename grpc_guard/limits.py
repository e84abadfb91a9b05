"""In-flight accounting for the server guard: counted slots and a byte budget (pure)."""

from __future__ import annotations


class Slots:
    """Up to `limit` things in flight at once; `take` never waits, it says no."""

    def __init__(self, name: str, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"{name}: the limit must be at least 1, got {limit}")
        self.name = name
        self.limit = limit
        self.in_use = 0

    def take(self) -> bool:
        if self.in_use >= self.limit:
            return False
        self.in_use += 1
        return True

    def give_back(self) -> None:
        if self.in_use <= 0:
            raise RuntimeError(f"{self.name}: a slot given back that was never taken")
        self.in_use -= 1


class ByteBudget:
    """Bytes held by calls in flight, at most `limit`; a reservation that would pass it is
    refused whole (never partly granted; waiting for room is the caller's business)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the byte budget must be at least 1, got {limit}")
        self.limit = limit
        self.held = 0

    def reserve(self, size: int) -> Reservation | None:
        if size < 0:
            raise ValueError(f"cannot reserve {size} bytes")
        if self.held + size > self.limit:
            return None
        self.held += size
        return Reservation(self, size)


class Reservation:
    """Bytes taken from a budget; `release` gives them back once, however often it is called."""

    def __init__(self, budget: ByteBudget, size: int) -> None:
        self._budget = budget
        self.size = size

    def resize(self, size: int) -> bool:
        """Holds `size` bytes instead (a reservation made for the most a request may be, once
        its real size is known); False, and nothing changes, if growing would pass the limit."""
        if size < 0:
            raise ValueError(f"cannot reserve {size} bytes")
        if self._budget.held - self.size + size > self._budget.limit:
            return False
        self._budget.held += size - self.size
        self.size = size
        return True

    def release(self) -> None:
        self.resize(0)
