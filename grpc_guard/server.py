"""Server interceptors that hold a server to its in-flight limits and answer undecodable requests.

    server = grpc.aio.server(interceptors=[*guard.around(telemetry), auth], options=...)

`around` puts the admission first, the observers (the RPC metrics) next and the verdicts last:

    admission   takes the call's slots, then reads and decodes the request itself
    telemetry   sees every call with its own type, the refused and the undecodable included
    verdicts    a refusal handed down instead of a request becomes its status here
    auth, the servicer

Why the request is read by the guard rather than by grpc: grpc reads a unary request whole
(anything up to the receive limit) before a handler runs, and keeps the raw bytes until the
call ends. Served as a request-streaming method instead (handlers.py), a call reads nothing until
it is admitted (flow control holds the client back meanwhile, after one window: options.py), a
refused call is answered without reading its body, and the raw bytes are dropped as soon as they
are parsed. A deserializer that fails inside grpc also logs a traceback and answers UNKNOWN,
unseen by the metrics; here it is INVALID_ARGUMENT naming the field (wire.py).

Past a limit a call gets RESOURCE_EXHAUSTED with RetryInfo, at once or after waiting at most
`Limits.receive_wait_seconds` for room to receive its request: never an unbounded queue. Exempt
methods (health, reflection) are never limited, so they answer however busy the server is.
Request-streaming methods other than reflection are not guarded (neither service has one).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
from dataclasses import dataclass

import grpc

from grpc_guard import allocator, status, wire
from grpc_guard.handlers import Admission, Context, Verdict, Verdicts, give_back
from grpc_guard.limits import ByteBudget, Reservation, Slots

log = logging.getLogger(__name__)
EXEMPT = ("/grpc.health.v1.Health/", "/grpc.reflection.")
MIB = 1024 * 1024
SMALL_REQUEST_BYTES = 64 * 1024  # a request without a large field; also its fields beside one
# After a large request is released, the heap is trimmed once things settle (see allocator.trim):
# soon after a call that failed (its request is held by a reference cycle until then, see
# Guard._trimmed), at most every TRIM_INTERVAL_SECONDS after calls that succeeded (their large
# blocks went back to the kernel when freed; the trim only returns the heaps' holes, and its
# full collection cost a CreateUser of a 4 MB avatar 5 to 10 ms when it ran after every burst).
TRIM_AFTER_BYTES = 1024 * 1024
TRIM_DELAY_SECONDS = 0.2
TRIM_INTERVAL_SECONDS = 5.0


@dataclass(frozen=True)
class Cap:
    """At most `limit` calls of `methods` (full names, "/pkg.Service/Method") at once.

    `what` names them to callers ("avatar uploads"). `bodies`: the methods carry large requests
    (see `Limits`). `counted=False` keeps the calls out of `Limits.max_concurrent_rpcs`:
    long-lived streams with a cap of their own.
    """

    what: str
    methods: frozenset[str]
    limit: int
    bodies: bool = False
    counted: bool = True


@dataclass(frozen=True)
class Limits:
    """`max_request_bytes`, the byte budget: serialized requests held by calls in flight (a
    parsed request holds about as much again, and a handler copies what it uses; the defaults
    of each service say how much RSS that makes). It must fit `max_body_bytes`.

    A request's size is unknown until grpc has received all of it, and grpc holds what it
    receives. So a call of a method with a `bodies` cap takes `max_body_bytes` (the largest
    valid request: an image at its byte limit and small fields) from the budget before its
    request is read, and keeps only its real size once read (a larger one, which the method
    will refuse, needs room for what it is); a call of any other method waits for one of
    `max_receiving` turns, and its request must then arrive within `receive_wait_seconds`. A
    call waits up to `receive_wait_seconds` for room or a turn (one comes in microseconds
    unless uploads fill the budget), then is refused without its body having been read.
    Methods without a `bodies` cap take small requests: one over `max_small_request_bytes` is
    refused once received, before it is parsed (handlers copy strings freely: a 30 MiB `id`
    would be copied several times over); past the budget then, it is refused at once."""

    max_concurrent_rpcs: int
    max_request_bytes: int
    caps: tuple[Cap, ...] = ()
    max_body_bytes: int = 32 * MIB
    max_small_request_bytes: int = SMALL_REQUEST_BYTES
    max_receiving: int = 2
    receive_wait_seconds: float = 1.0
    retry_after_seconds: float = 1.0
    exempt: tuple[str, ...] = EXEMPT  # method name prefixes
    max_request_elements: int = wire.MAX_ELEMENTS


class Guard:
    """The in-flight state of one server; `around` gives the interceptors that enforce it."""

    def __init__(self, limits: Limits) -> None:
        if limits.max_body_bytes > limits.max_request_bytes:
            raise ValueError("the byte budget must fit a request of max_body_bytes")
        self.limits = limits
        self.rpcs = Slots("concurrent RPCs", limits.max_concurrent_rpcs)
        self.budget = ByteBudget(limits.max_request_bytes)
        self.caps = [(cap, Slots(cap.what, cap.limit)) for cap in limits.caps]
        self._receiving = asyncio.Semaphore(limits.max_receiving)
        self._with_bodies = frozenset().union(*(c.methods for c in limits.caps if c.bodies))
        self._freed: set[asyncio.Future[None]] = set()  # calls waiting for room in the budget
        self._warnings = _Warnings()
        self._trim: asyncio.TimerHandle | None = None

    def around(self, *observers: grpc.aio.ServerInterceptor) -> list[grpc.aio.ServerInterceptor]:
        """The server's interceptors up to `observers` (telemetry), which see every status."""
        return [Admission(self), *observers, Verdicts(self.limits.exempt)]

    @property
    def waiting(self) -> int:
        """Calls waiting for room in the budget before their request is read."""
        return len(self._freed)

    def exempt(self, method: str) -> bool:
        return method.startswith(self.limits.exempt)

    def admit(self, method: str) -> tuple[list[Slots], Verdict | None]:
        """The slots `method` takes, or a refusal (then it holds none)."""
        taken: list[Slots] = []
        counted = True
        for cap, slots in self.caps:
            if method in cap.methods:
                counted = counted and cap.counted
                if not slots.take():
                    give_back(taken)
                    return [], self._refuse(f"server busy: {cap.limit} {cap.what} in flight")
                taken.append(slots)
        if counted:
            if not self.rpcs.take():
                give_back(taken)
                return [], self._refuse(f"server busy: {self.rpcs.limit} calls in flight")
            taken.append(self.rpcs)
        return taken, None

    def size_limit(self, method: str) -> int | None:
        """The largest request `method` takes; None: what grpc lets through."""
        return None if method in self._with_bodies else self.limits.max_small_request_bytes

    async def receive(
        self, method: str, context: Context
    ) -> tuple[object, Reservation | None] | Verdict:
        """The call's serialized request (EOF if none came) with the bytes reserved for it
        (None: reserve them with `reserve`), or a refusal."""
        if method in self._with_bodies:
            reservation = await self._room_for(self.limits.max_body_bytes)
            if reservation is None:
                return self._over_budget()
            try:
                return await context.read(), reservation
            except BaseException:
                self.release(reservation)
                raise
        try:
            async with asyncio.timeout(self.limits.receive_wait_seconds):
                await self._receiving.acquire()
        except TimeoutError:
            return self._refuse(f"server busy: {self.limits.max_receiving} requests being received")
        try:  # a small request arrives at once: one that trickles in must not hold the turn
            async with asyncio.timeout(self.limits.receive_wait_seconds):
                return await context.read(), None
        except TimeoutError:
            wait = self.limits.receive_wait_seconds
            return self._refuse(f"the request did not arrive within {wait:g} s")
        finally:
            self._receiving.release()

    def reserve(self, size: int) -> Reservation | Verdict:
        """`size` bytes from the budget at once, or a refusal."""
        reservation = self.budget.reserve(size)
        return self._over_budget() if reservation is None else reservation

    def resize(self, reservation: Reservation, size: int) -> Verdict | None:
        grew = size > reservation.size
        if not reservation.resize(size):
            return self._over_budget()
        if not grew:
            self._wake()
        return None

    def release(self, reservation: Reservation, *, failed: bool = False) -> None:
        """Gives `reservation` back; `failed`: its call ended with an error."""
        large = reservation.size >= TRIM_AFTER_BYTES
        reservation.release()
        self._wake()
        if not large:
            return
        # One trim for a burst: scheduled by the first large release, brought forward by a
        # failed call.
        loop = asyncio.get_running_loop()
        delay = TRIM_DELAY_SECONDS if failed else TRIM_INTERVAL_SECONDS
        if self._trim is not None:
            if self._trim.when() <= loop.time() + delay:
                return
            self._trim.cancel()
        self._trim = loop.call_later(delay, self._trimmed)

    def _trimmed(self) -> None:
        self._trim = None
        # A call that ends in an error leaves its request in a reference cycle that only the
        # cyclic collector frees, and it runs its full collection rarely: 10 refused uploads
        # held ~300 MiB until it did. The cycle (found with gc.DEBUG_SAVEALL) runs through
        # grpc's own handler frames and the AbortError that `context.abort` raises, whose
        # context and traceback reach the servicer's and the use case's frames, which hold the
        # request; it is not ours to break, so the memory it pins is collected here.
        gc.collect()
        allocator.trim()

    async def _room_for(self, size: int) -> Reservation | None:
        try:
            async with asyncio.timeout(self.limits.receive_wait_seconds):
                while (reservation := self.budget.reserve(size)) is None:
                    freed = asyncio.get_running_loop().create_future()
                    self._freed.add(freed)
                    try:
                        await freed
                    finally:
                        self._freed.discard(freed)
                return reservation
        except TimeoutError:
            return None

    def _wake(self) -> None:
        for freed in self._freed:
            if not freed.done():
                freed.set_result(None)

    def _over_budget(self) -> Verdict:
        limit = self.budget.limit
        shown = f"{limit / MIB:g} MiB" if limit >= MIB else f"{limit} bytes"
        return self._refuse(f"server busy: {shown} of requests in memory")

    def _refuse(self, limit: str) -> Verdict:
        """RESOURCE_EXHAUSTED with RetryInfo; `limit` says which was reached."""
        self._warnings.refused(limit)
        after = self.limits.retry_after_seconds
        message = f"{limit} (the limit); retry after {after:g} s"
        return Verdict(status.resource_exhausted(message, after))


class _Warnings:
    """At most one warning per limit every `every` seconds, with how many calls it refused."""

    def __init__(self, every: float = 10.0) -> None:
        self._every = every
        self._last: dict[str, float] = {}
        self._refused: dict[str, int] = {}

    def refused(self, limit: str) -> None:
        self._refused[limit] = self._refused.get(limit, 0) + 1
        now = time.monotonic()
        if now - self._last.get(limit, -math.inf) >= self._every:
            self._last[limit] = now
            refused = self._refused.pop(limit)
            log.warning("in-flight limit reached", extra={"limit": limit, "refused": refused})
