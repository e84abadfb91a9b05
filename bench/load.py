"""API load: CreateUser (0.3 and 12 MP avatars), GetUser and ListUsers, with the inline baseline.

    python bench/load.py [--callers 32] [--seconds 10] [--rounds 2] [--summary FILE]

Starts a private stack (bench/stack.py) with two accounts processes on the same NATS, S3 and
PostgreSQL server (each with its own database): the real service ("background": CreateUser
stores the original and commits the user and its event, the worker renders later) and
bench/inline_accounts.py ("inline": the same CreateUser, then the render in the request handler,
in a thread pool of one thread per core, and the user answered READY). The imaging worker is not
running: in production it runs in other pods, and on this two-core machine it would take the
cores from the API under test; the events wait in JetStream.

A fixed number of concurrent callers (grpc.aio, one channel per service) calls for a fixed
time. Each scenario's time is cut into `--rounds` slices, and the slices of all scenarios are
interleaved (the order rotating each round), so that whatever else the machine is doing weighs
on every scenario alike. calls/s counts the successful calls that ended within the slices;
latencies are those of every successful call started in them. The CPU seconds of each process
tree (/proc) during each scenario are divided by its calls.

Scenarios: CreateUser 0.3 MP and 12 MP (the four bench photos and their 12 MP versions, from
bench/photos.py, in turn), each against both services; GetUser (random users) and ListUsers
(walking pages of 50) against the background service; and GetUser with 4 callers while 28
callers create 12 MP users, against both: what the other calls of an API suffer.

Ends with `createuser background/inline speedup=S p99_ratio=R` for the 12 MP avatars, where S is
background calls/s over inline calls/s and R background p99 over inline p99; exits 1 when the
targets of issue 7 are missed (S >= 20, R <= 1/20).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import random
import shutil
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import photos
import procstat
from accounts.v1 import accounts_pb2, accounts_pb2_grpc
from stack import Stack, stack

from devstack.net import free_port

BENCH = Path(__file__).resolve().parent
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]
CALL_TIMEOUT = 120.0
SPEEDUP_TARGET = 20.0
P99_RATIO_TARGET = 1 / 20
MIXED_GETTERS = 4
SETTLE_SECONDS = 0.5  # between slices: the relay publishes what the slice created


@dataclass
class Service:
    """One accounts process under test and the users it has answered."""

    name: str  # background | inline
    stub: Any
    pid: int | None
    user_ids: list[str] = field(default_factory=list)


Call = Callable[[int], Awaitable[None]]  # one call by caller number i


@dataclass
class Lane:
    """`callers` concurrent callers each making `call` in a loop."""

    name: str
    callers: int
    call: Call


@dataclass
class Scenario:
    name: str
    service: Service
    lanes: list[Lane]


@dataclass
class LaneResult:
    latencies_ms: list[float] = field(default_factory=list)
    in_window: int = 0
    seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.in_window / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Nearest rank; nan without samples."""
        if not self.latencies_ms:
            return math.nan
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


@dataclass
class ScenarioResult:
    lanes: dict[str, LaneResult] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # group -> CPU seconds


def creator(service: Service, images: Sequence[bytes]) -> Call:
    turn = itertools.count()

    async def call(_: int) -> None:
        request = accounts_pb2.CreateUserRequest(
            email=f"load-{uuid.uuid4().hex}@example.com",
            display_name="Load Test",
            avatar_image=images[next(turn) % len(images)],
        )
        user = await service.stub.CreateUser(request, timeout=CALL_TIMEOUT)
        service.user_ids.append(user.id)

    return call


def getter(service: Service) -> Call:
    async def call(_: int) -> None:
        user_id = random.choice(service.user_ids)
        await service.stub.GetUser(accounts_pb2.GetUserRequest(id=user_id), timeout=CALL_TIMEOUT)

    return call


def lister(service: Service) -> Call:
    tokens: dict[int, str] = {}

    async def call(i: int) -> None:
        request = accounts_pb2.ListUsersRequest(page_size=50, page_token=tokens.get(i, ""))
        reply = await service.stub.ListUsers(request, timeout=CALL_TIMEOUT)
        tokens[i] = reply.next_page_token  # "" after the last page: start again

    return call


async def run_lane(lane: Lane, seconds: float, into: LaneResult) -> None:
    started = time.perf_counter()
    deadline = started + seconds

    async def caller(i: int) -> None:
        while time.perf_counter() < deadline:
            begin = time.perf_counter()
            try:
                await lane.call(i)
            except grpc.aio.AioRpcError as exc:
                into.errors[exc.code().name] += 1
                continue
            end = time.perf_counter()
            into.latencies_ms.append((end - begin) * 1000)
            into.in_window += end <= deadline

    await asyncio.gather(*(caller(i) for i in range(lane.callers)))
    into.seconds += seconds


async def run_slice(
    scenario: Scenario, seconds: float, result: ScenarioResult, groups: dict[str, Any]
) -> None:
    before, busy = procstat.snapshot(groups), procstat.machine_busy()
    before["client"] = _own_cpu()
    await asyncio.gather(
        *(
            run_lane(lane, seconds, result.lanes.setdefault(lane.name, LaneResult()))
            for lane in scenario.lanes
        )
    )
    after = procstat.snapshot(groups)
    after["client"] = _own_cpu()
    after["machine"], before["machine"] = procstat.machine_busy(), busy
    for group, seconds in procstat.delta(after, before).items():
        result.cpu[group] = result.cpu.get(group, 0.0) + seconds
    await asyncio.sleep(SETTLE_SECONDS)


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def scenarios(
    background: Service, inline: Service, corpus: dict[str, dict[str, bytes]], callers: int
) -> list[Scenario]:
    out = []
    for cls in ("0.3mp", "12mp"):
        images = list(corpus[cls].values())
        for service in (background, inline):
            lanes = [Lane("CreateUser", callers, creator(service, images))]
            out.append(Scenario(f"CreateUser {cls}", service, lanes))
    out.append(Scenario("GetUser", background, [Lane("GetUser", callers, getter(background))]))
    out.append(Scenario("ListUsers", background, [Lane("ListUsers", callers, lister(background))]))
    big = list(corpus["12mp"].values())
    for service in (background, inline):
        lanes = [
            Lane("CreateUser", callers - MIXED_GETTERS, creator(service, big)),
            Lane("GetUser", MIXED_GETTERS, getter(service)),
        ]
        out.append(Scenario("GetUser beside CreateUser 12mp", service, lanes))
    return out


async def measure(
    s: Stack, inline_pid: int | None, inline_port: int, args: argparse.Namespace
) -> tuple[list[Scenario], list[ScenarioResult]]:
    corpus = photos.classes()
    async with (
        grpc.aio.insecure_channel(s.accounts_addr, options=CHANNEL_OPTIONS) as bg_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{inline_port}", options=CHANNEL_OPTIONS) as channel,
    ):
        background = Service(
            "background", accounts_pb2_grpc.AccountsServiceStub(bg_channel), s.accounts.pid
        )
        inline = Service("inline", accounts_pb2_grpc.AccountsServiceStub(channel), inline_pid)
        plan = [p for p in scenarios(background, inline, corpus, args.callers)
                if args.only in p.name]  # fmt: skip
        groups: dict[str, Any] = {
            "background": (background.pid, True),
            "inline": (inline.pid, True),
            "weed": (s.s3.process.pid, True),
            "postgres": (s.pg.process.pid, True),
            "nats": (s.nats.process.pid, True),
        }
        s.note("warming up: one CreateUser per caller of each class and service")
        for service in (background, inline):  # also the users GetUser asks for
            for cls in ("0.3mp", "12mp"):
                warm = creator(service, list(corpus[cls].values()))
                await asyncio.gather(*(warm(i) for i in range(args.callers)))
        results = [ScenarioResult() for _ in plan]
        slice_seconds = args.seconds / args.rounds
        for round_ in range(args.rounds):
            shift = round_ * len(plan) // args.rounds
            order = list(range(len(plan)))[shift:] + list(range(len(plan)))[:shift]
            for index in order:
                await run_slice(plan[index], slice_seconds, results[index], groups)
            s.note(f"round {round_ + 1}/{args.rounds} done")
    return plan, results


HEADER = (
    "| scenario | service | calls/s | p50 | p99 | p99.9 | calls | errors "
    "| API CPU | weed | postgres | nats | client | rest of machine |\n"
    "| --- | --- " + "| ---: " * 5 + "| --- " + "| ---: " * 6 + "|"
)


def row(scenario: Scenario, result: ScenarioResult, lane_name: str) -> str:
    """One table row; CPU per call only for one-lane scenarios (else whose is it?)."""
    lane = result.lanes[lane_name]
    single = len(result.lanes) == 1
    label = scenario.name if single else f"{lane_name} ({scenario.name})"
    calls = len(lane.latencies_ms)
    cpu = "| | | | | |"
    if single and calls:
        per = {group: 1000 * seconds / calls for group, seconds in result.cpu.items()}
        rest = per["machine"] - sum(v for k, v in per.items() if k != "machine")
        cpu = (
            f"| {per[scenario.service.name]:.1f} | {per['weed']:.1f} | {per['postgres']:.1f} "
            f"| {per['nats']:.2f} | {per['client']:.1f} | {rest:.1f} |"
        )
    errors = ", ".join(f"{k} {v}" for k, v in lane.errors.items()) or "0"
    return (
        f"| {label} | {scenario.service.name} | {lane.rate:.1f} | {lane.percentile(0.5):.1f} "
        f"| {lane.percentile(0.99):.1f} | {lane.percentile(0.999):.1f} | {calls} | {errors} {cpu}"
    )


def summary(plan: list[Scenario], results: list[ScenarioResult]) -> tuple[str, list[str]]:
    """The summary line for 12 MP CreateUser, and the targets it misses."""
    lanes = {
        p.service.name: r.lanes["CreateUser"]
        for p, r in zip(plan, results, strict=True)
        if p.name == "CreateUser 12mp"
    }
    if set(lanes) != {"background", "inline"}:
        return "createuser background/inline (12 MP CreateUser scenarios not run)", []
    background, inline = lanes["background"], lanes["inline"]
    speedup = background.rate / inline.rate if inline.rate else math.inf
    p99_ratio = background.percentile(0.99) / inline.percentile(0.99)
    missed = []
    if speedup < SPEEDUP_TARGET:
        missed.append(f"createuser 12mp speedup {speedup:.1f} is below {SPEEDUP_TARGET:g}")
    if p99_ratio > P99_RATIO_TARGET:
        missed.append(f"createuser 12mp p99_ratio {p99_ratio:.3f} is above {P99_RATIO_TARGET:g}")
    return f"createuser background/inline speedup={speedup:.1f} p99_ratio={p99_ratio:.2f}", missed


def report(plan: list[Scenario], results: list[ScenarioResult], args: argparse.Namespace) -> None:
    print(
        f"\n{args.callers} callers, {args.seconds:g} s per scenario in {args.rounds} interleaved "
        "slices; latencies in ms; CPU in ms per call (process trees, /proc)"
    )
    print(HEADER)
    for scenario, result in zip(plan, results, strict=True):
        for lane_name in result.lanes:
            print(row(scenario, result, lane_name))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="per scenario")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved slices per scenario")
    parser.add_argument("--inline-render", choices=("thread", "loop"), default="thread")
    parser.add_argument("--summary", type=Path, help="also write the summary line here")
    parser.add_argument("--only", default="", help="only the scenarios whose name has this")
    args = parser.parse_args()
    with stack("load-", services=("accounts",)) as s:
        inline_port = free_port()
        inline = s.start_service(
            "inline",
            [sys.executable, str(BENCH / "inline_accounts.py"), "--render-in", args.inline_render],
            env={"ACCOUNTS_PORT": str(inline_port), "DATABASE_URL": s.pg.create_database("inline")},
        )
        try:
            plan, results = asyncio.run(measure(s, inline.pid, inline_port, args))
        except BaseException:
            s.note(f"failed; logs kept in {s.root}")
            raise
        root = s.root
    report(plan, results, args)
    line, missed = summary(plan, results)
    shutil.rmtree(root, ignore_errors=True)
    for miss in missed:
        print(f"TARGET MISSED: {miss}")
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(f"{line}\n")
    print(line)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
