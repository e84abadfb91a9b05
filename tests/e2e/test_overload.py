"""Overload against the running pipeline: bursts past the accounts server's in-flight limits are
refused with RESOURCE_EXHAUSTED and RetryInfo, never by running out of memory; health and a
GetUser beside them keep answering within a second, and neither service process is restarted."""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from accounts.v1 import accounts_pb2, accounts_pb2_grpc
from PIL import Image

from devstack.net import wait_until
from grpc_guard.status import retry_delay
from tests.e2e.conftest import Service
from tests.e2e.support import READY, beside, create_user, image_bytes, unique_email, wait_settled
from tests.e2e.test_hostile import health_watched, pids
from tests.e2e.test_metrics import scrape, total

MIB = 1024 * 1024
RSS_LIMIT = 512 * MIB  # the accounts container's memory limit
RSS_EVERY = 0.02  # seconds between samples of the accounts process's RSS
GET_USER_BOUND = 1.0  # seconds: the bound for a GetUser beside a burst

UPLOADS = 16  # concurrent CreateUser calls, each on its own connection
UPLOAD_DEADLINE = 30.0
SETTLE_DEADLINE = 60.0  # accepted uploads reach READY within it

WATCH_LIMIT = 1000  # MAX_WATCH_STREAMS, the default
WATCH_CHANNELS = 30
WATCH_PER_CHANNEL = 50  # 30 x 50 = 1,500 streams, well under 1,024 per connection
WATCH_STREAMS = WATCH_CHANNELS * WATCH_PER_CHANNEL
FIRST_MESSAGE_DEADLINE = 30.0  # every stream has its first message or its error by then
STREAM_DEADLINE = 120.0  # no stream outlives the test, whatever happens to it
RELEASE_DEADLINE = 10.0  # after the burst is cancelled, its slots are free again within it


# ---------------------------------------------------------------------------------- helpers


def noise_png(mib: float = 19.5) -> bytes:
    """A legal RGB PNG of noise of about `mib` MiB: incompressible, so it stays that big."""
    side = int((mib * MIB / 3) ** 0.5)  # 3 bytes a pixel, stored (compress_level 0)
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=0)
    return out.getvalue()


@pytest.fixture(scope="module")
def big_png() -> bytes:
    data = noise_png()
    assert 19.4 * MIB < len(data) < 20 * MIB - 64 * 1024, len(data)  # under MAX_AVATAR_BYTES
    return data


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and its descendants."""
    total_kib = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):  # a child that just ended
            continue
        total_kib += next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")),
            0,
        )
    return total_kib * 1024


@dataclass
class RssWatch:
    pid: int
    samples: list[int] = field(default_factory=list)

    @property
    def peak(self) -> int:
        return max(self.samples)

    def run(self, stop: threading.Event) -> None:
        self.samples.append(rss_bytes(self.pid))
        while not stop.wait(RSS_EVERY):  # pacing between samples, not synchronisation
            self.samples.append(rss_bytes(self.pid))


@contextmanager
def rss_watched(service: Service) -> Iterator[RssWatch]:
    """Samples the service's RSS from a thread while inside; asserts its peak afterwards."""
    assert service.process.pid is not None
    watch = RssWatch(service.process.pid)
    with beside(watch.run):
        yield watch
    print(f"\n{service.name} RSS peak {watch.peak / MIB:.0f} MiB over {len(watch.samples)} samples")
    assert watch.peak < RSS_LIMIT, f"{service.name} RSS reached {watch.peak / MIB:.0f} MiB"


def own_connection(service: Service, *options: tuple[str, int]) -> grpc.Channel:
    """A channel with a connection of its own (not shared with other channels to `service`)."""
    return grpc.insecure_channel(
        service.addr, options=[("grpc.use_local_subchannel_pool", 1), *options]
    )


def refusal_delay(error: BaseException) -> float:
    """The RetryInfo delay of a RESOURCE_EXHAUSTED refusal; fails for any other error."""
    assert isinstance(error, grpc.RpcError), repr(error)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    delay = retry_delay(error)
    assert delay is not None, f"RESOURCE_EXHAUSTED without RetryInfo: {error.details()}"
    assert delay > 0, delay
    return delay


@dataclass
class GetUserWatch:
    """GetUser of one user, asked over and over from a thread on its own connection."""

    stub: Any
    user_id: str
    latencies: list[float] = field(default_factory=list)
    errors: list[grpc.RpcError] = field(default_factory=list)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.stub.GetUser(accounts_pb2.GetUserRequest(id=self.user_id), timeout=5)
            except grpc.RpcError as exc:
                self.errors.append(exc)
            self.latencies.append(time.monotonic() - started)
            stop.wait(0.02)  # pacing between calls, not synchronisation


@contextmanager
def get_user_watched(service: Service, user_id: str) -> Iterator[GetUserWatch]:
    with own_connection(service) as channel:
        watch = GetUserWatch(accounts_pb2_grpc.AccountsServiceStub(channel), user_id)
        with beside(watch.run):
            yield watch
    assert not watch.errors, f"GetUser failed beside the burst: {watch.errors[:3]}"
    assert watch.latencies, "no GetUser was sent beside the burst"
    slowest = max(watch.latencies)
    print(f"GetUser beside the burst: {len(watch.latencies)} calls, slowest {slowest:.3f} s")
    assert slowest < GET_USER_BOUND, f"GetUser took {slowest:.2f} s beside the burst"


# ------------------------------------------------------------------ 16 uploads of 19.5 MiB


def test_sixteen_concurrent_uploads_of_19_5_mib_answer_and_accounts_stays_under_512_mib(
    pipeline: tuple[Service, Service], accounts_stub: Any, big_png: bytes
) -> None:
    accounts, imaging = pipeline
    before = pids(accounts, imaging)
    options = [("grpc.max_send_message_length", 64 * MIB)]
    with ExitStack() as channels, health_watched(accounts, imaging) as health:
        stubs = [
            accounts_pb2_grpc.AccountsServiceStub(
                channels.enter_context(own_connection(accounts, *options))
            )
            for _ in range(UPLOADS)
        ]
        with rss_watched(accounts):
            calls = [
                stub.CreateUser.future(
                    accounts_pb2.CreateUserRequest(
                        email=unique_email("overload"),
                        display_name="Overload",
                        avatar_image=big_png,
                    ),
                    timeout=UPLOAD_DEADLINE,
                )
                for stub in stubs
            ]
            errors = [call.exception(timeout=UPLOAD_DEADLINE + 5) for call in calls]
        created = [c.result().id for c, e in zip(calls, errors, strict=True) if e is None]
        delays = [refusal_delay(e) for e in errors if e is not None]
        print(f"CreateUser x{UPLOADS}: {len(created)} OK, {len(delays)} RESOURCE_EXHAUSTED")
        assert created, "no upload was accepted"

        # The accepted images are legal: they are rendered (which also keeps their renders
        # from slowing the tests that come after this one).
        settled = [wait_settled(accounts_stub, user_id, SETTLE_DEADLINE) for user_id in created]
        assert [u.thumbnail_status for u in settled] == [READY] * len(created), settled
    print(f"slowest health answers: {health.slowest}")
    assert pids(accounts, imaging) == before, "a service process was restarted"


# ------------------------------------------------------------ 1,500 WatchUser streams


@dataclass
class WatchBurst:
    """`streams` WatchUser streams of one user, opened together from a thread of their own over
    `channels` connections and held open until `release` is set; then cancelled."""

    addr: str
    user_id: str
    channels: int
    per_channel: int
    answered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    opened: int = 0  # streams whose first message (the user now) arrived
    refused: list[grpc.aio.AioRpcError] = field(default_factory=list)
    seconds: float = 0.0  # until every stream had its first message or its error

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        options = [("grpc.use_local_subchannel_pool", 1)]
        channels = [
            grpc.aio.insecure_channel(self.addr, options=options) for _ in range(self.channels)
        ]
        try:
            request = accounts_pb2.WatchUserRequest(id=self.user_id)
            started = time.monotonic()
            calls = [
                accounts_pb2_grpc.AccountsServiceStub(channel).WatchUser(
                    request, timeout=STREAM_DEADLINE
                )
                for channel in channels
                for _ in range(self.per_channel)
            ]
            async with asyncio.timeout(FIRST_MESSAGE_DEADLINE):
                firsts = await asyncio.gather(*(self._first(call) for call in calls))
            self.seconds = time.monotonic() - started
            self.opened = sum(1 for first in firsts if first is None)
            self.refused = [first for first in firsts if first is not None]
            self.answered.set()
            await asyncio.to_thread(self.release.wait, STREAM_DEADLINE)
            for call in calls:
                call.cancel()
        finally:
            await asyncio.gather(*(channel.close() for channel in channels))

    async def _first(self, call: Any) -> grpc.aio.AioRpcError | None:
        """None once the stream's first message (the user now) has arrived, or its error."""
        try:
            user = await call.read()
        except grpc.aio.AioRpcError as exc:
            return exc
        assert user is not grpc.aio.EOF and user.id == self.user_id, user
        return None


def watch_in_flight(accounts: Service) -> float:
    """WatchUser streams the accounts server has started and not yet finished (its metrics)."""
    samples = scrape(accounts.metrics_url)
    method = {"grpc_method": "WatchUser"}
    started = total(samples, "grpc_server_started_total", **method)
    return started - total(samples, "grpc_server_handled_total", **method)


def watch_admitted(stub: Any, user_id: str) -> bool:
    """True if a new WatchUser stream gets the user; False if refused with RetryInfo."""
    stream = stub.WatchUser(accounts_pb2.WatchUserRequest(id=user_id), timeout=5)
    try:
        return bool(next(stream).id == user_id)
    except grpc.RpcError as exc:
        refusal_delay(exc)
        return False
    finally:
        stream.cancel()


@pytest.mark.timeout(120)
def test_watch_streams_past_the_limit_are_refused_and_get_user_stays_fast(
    pipeline: tuple[Service, Service], accounts_stub: Any
) -> None:
    accounts, imaging = pipeline
    user = create_user(accounts_stub, image_bytes("geom_64x64.png"))
    wait_settled(accounts_stub, user.id, 30)  # no change of state while the streams open
    idle = watch_in_flight(accounts)
    before = pids(accounts, imaging)
    burst = WatchBurst(accounts.addr, user.id, WATCH_CHANNELS, WATCH_PER_CHANNEL)
    with (
        health_watched(accounts, imaging) as health,
        rss_watched(accounts),
        get_user_watched(accounts, user.id),
        ThreadPoolExecutor(1) as pool,
    ):
        done = pool.submit(burst.run)
        try:
            wait_until(
                lambda: burst.answered.is_set() or done.done(),
                FIRST_MESSAGE_DEADLINE + 5,
                "every WatchUser stream answered",
            )
            if done.done():
                done.result()  # the burst failed: its error
            print(
                f"WatchUser x{WATCH_STREAMS}: {burst.opened} open, {len(burst.refused)} refused, "
                f"all answered in {burst.seconds:.2f} s"
            )
            assert burst.opened == WATCH_LIMIT, burst.opened
            assert len(burst.refused) == WATCH_STREAMS - burst.opened
            for error in burst.refused:
                refusal_delay(error)
            # At the limit, one more is refused too, and a GetUser still answers at once.
            assert not watch_admitted(accounts_stub, user.id)
            started = time.monotonic()
            accounts_stub.GetUser(accounts_pb2.GetUserRequest(id=user.id), timeout=5)
            assert time.monotonic() - started < GET_USER_BOUND
        finally:
            burst.release.set()
        done.result(timeout=30)
    print(f"slowest health answers: {health.slowest}")

    # Cancelled streams give their slots back: none is left in flight, and new streams get in.
    wait_until(
        lambda: watch_in_flight(accounts) <= idle, RELEASE_DEADLINE, "the WatchUser slots freed"
    )
    wait_until(
        lambda: watch_admitted(accounts_stub, user.id), RELEASE_DEADLINE, "a WatchUser admitted"
    )
    assert pids(accounts, imaging) == before, "a service process was restarted"
