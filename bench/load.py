"""API load: CreateUser (0.3 and 12 MP avatars), GetUser and ListUsers, with the inline baseline.

    python bench/load.py [--callers 32] [--seconds 10] [--rounds 2] [--summary FILE]
                         [--only TEXT] [--compare-tree DIR] [--profile DIR]

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
bench/photos.py, in turn), each against both services, the avatar sent as `avatar_image` bytes;
CreateUser 12 MP through the upload path against the background service (each call:
CreateAvatarUpload, the client's presigned PUT straight to S3, then CreateUser with
`avatar_object`; its latency and API CPU are those of the whole sequence); GetUser (random
users) and ListUsers (walking pages of 50) against the background service; and GetUser with 4
callers while 28 callers create 12 MP users, against both: what the other calls of an API
suffer. The accounts processes' in-flight limits and upload rate are lifted for the run
(`bench_limits`).

`--compare-tree DIR` also runs the CreateUser scenarios against a third accounts process
started from another copy of the repository (`git archive HEAD | tar -x -C DIR`, say),
labelled "before": an A/B of a change, measured in the same run, slices interleaved.
`--profile DIR` records each accounts process with py-spy during the measured slices (its CPU
figures are then inflated by py-spy's own; `make bench-profile` installs it).

Ends with `api cpu class=12mp object_ms=A bytes_ms=B inline_ms=C object/inline=D
bytes/inline=E`: the accounts process's CPU per 12 MP CreateUser through the upload path
(CreateAvatarUpload's included), with `avatar_image` bytes, and inline; exits 1 when issue 13's
targets are missed (D <= 1/20, E <= 1/8). The line before it gives issue 7's figures, calls/s
and p99 of background against inline for 12 MP bytes, with S3 and the rest sharing the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
import pyspy
import urllib3
from accounts.v1 import accounts_pb2, accounts_pb2_grpc
from stack import Stack, stack

from devstack.net import free_port

BENCH = Path(__file__).resolve().parent
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]
CALL_TIMEOUT = 120.0
OBJECT_RATIO_TARGET = 1 / 20
BYTES_RATIO_TARGET = 1 / 8
MIXED_GETTERS = 4
SETTLE_SECONDS = 0.5  # between slices: the relay publishes what the slice created
MIB = 1024 * 1024


def bench_limits(callers: int) -> dict[str, str]:
    """The accounts processes' in-flight limits, lifted for the load generator: sized for a
    512 MiB container, they refuse more than 16 CreateUser calls at once (each holding a whole
    avatar's worth of the byte budget until its request has arrived), and CreateAvatarUpload's
    token bucket more than 10 a second; the bench measures the calls' work, not the refusals."""
    return {
        "MAX_CONCURRENT_UPLOADS": str(callers),
        "MAX_REQUEST_BYTES_IN_FLIGHT": str(callers * 21 * MIB),
        "UPLOADS_PER_SECOND": "100000",
        "UPLOAD_BURST": "100000",
    }


@dataclass
class Service:
    """One accounts process under test and the users it has answered."""

    name: str  # background | inline | before
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
    key: str = ""  # what the summary looks it up by: bytes, object (12 MP CreateUser)


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


class PutFailed(Exception):
    """The presigned PUT was refused (its status) or failed."""


def uploader(service: Service, images: Sequence[bytes], http: urllib3.PoolManager) -> Call:
    """The upload path: CreateAvatarUpload, the PUT to storage (in a thread: urllib3 blocks),
    then CreateUser with `avatar_object`."""
    turn = itertools.count()

    def put(url: str, data: bytes) -> None:
        try:
            reply = http.request("PUT", url, body=data, headers={"Content-Type": "image/jpeg"})
        except urllib3.exceptions.HTTPError as exc:
            raise PutFailed(type(exc).__name__) from exc
        if reply.status != 200:
            raise PutFailed(f"HTTP {reply.status}")

    async def call(_: int) -> None:
        image = images[next(turn) % len(images)]
        issued = await service.stub.CreateAvatarUpload(
            accounts_pb2.CreateAvatarUploadRequest(
                content_type="image/jpeg", content_length=len(image)
            ),
            timeout=CALL_TIMEOUT,
        )
        await asyncio.to_thread(put, issued.upload_url, image)
        request = accounts_pb2.CreateUserRequest(
            email=f"load-{uuid.uuid4().hex}@example.com",
            display_name="Load Test",
            avatar_object=issued.object,
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
            except PutFailed as exc:
                into.errors[f"PUT {exc}"] += 1
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
    services: dict[str, Service],
    corpus: dict[str, dict[str, bytes]],
    callers: int,
    http: urllib3.PoolManager,
) -> list[Scenario]:
    background, inline = services["background"], services["inline"]
    before = [services["before"]] if "before" in services else []
    out = []
    for cls in ("0.3mp", "12mp"):
        images = list(corpus[cls].values())
        for service in (background, inline, *before):
            lanes = [Lane("CreateUser", callers, creator(service, images))]
            key = "bytes" if cls == "12mp" else ""
            out.append(Scenario(f"CreateUser {cls}", service, lanes, key))
    big = list(corpus["12mp"].values())
    for service in (background, *before):
        lanes = [Lane("CreateUser", callers, uploader(service, big, http))]
        out.append(Scenario("CreateUser 12mp, avatar_object", service, lanes, "object"))
    out.append(Scenario("GetUser", background, [Lane("GetUser", callers, getter(background))]))
    out.append(Scenario("ListUsers", background, [Lane("ListUsers", callers, lister(background))]))
    for service in (background, inline):
        lanes = [
            Lane("CreateUser", callers - MIXED_GETTERS, creator(service, big)),
            Lane("GetUser", MIXED_GETTERS, getter(service)),
        ]
        out.append(Scenario("GetUser beside CreateUser 12mp", service, lanes))
    return out


async def measure(
    s: Stack, processes: dict[str, tuple[int | None, str]], args: argparse.Namespace
) -> tuple[list[Scenario], list[ScenarioResult]]:
    """`processes`: each accounts process under test by name, (pid, address)."""
    corpus = photos.classes()
    http = urllib3.PoolManager(maxsize=args.callers, timeout=CALL_TIMEOUT, retries=False)
    async with contextlib.AsyncExitStack() as channels:
        services = {}
        for name, (pid, addr) in processes.items():
            channel = await channels.enter_async_context(
                grpc.aio.insecure_channel(addr, options=CHANNEL_OPTIONS)
            )
            services[name] = Service(name, accounts_pb2_grpc.AccountsServiceStub(channel), pid)
        plan = [p for p in scenarios(services, corpus, args.callers, http)
                if args.only in p.name]  # fmt: skip
        groups: dict[str, Any] = {
            **{name: (service.pid, True) for name, service in services.items()},
            "weed": (s.s3.process.pid, True),
            "postgres": (s.pg.process.pid, True),
            "nats": (s.nats.process.pid, True),
        }
        s.note("warming up: one CreateUser per caller of each class, path and service")
        big = list(corpus["12mp"].values())
        for service in services.values():  # also the users GetUser asks for
            warm_ups = [creator(service, list(corpus[cls].values())) for cls in ("0.3mp", "12mp")]
            if service.name != "inline":
                warm_ups.append(uploader(service, big, http))
            for warm in warm_ups:
                await asyncio.gather(*(warm(i) for i in range(args.callers)))
        results = [ScenarioResult() for _ in plan]
        slice_seconds = args.seconds / args.rounds
        recordings = [
            pyspy.Recording(service.pid or 0, args.profile / f"accounts-{name}.txt")
            for name, service in services.items()
            if args.profile
        ]
        try:
            for round_ in range(args.rounds):
                shift = round_ * len(plan) // args.rounds
                order = list(range(len(plan)))[shift:] + list(range(len(plan)))[:shift]
                for index in order:
                    await run_slice(plan[index], slice_seconds, results[index], groups)
                s.note(f"round {round_ + 1}/{args.rounds} done")
        finally:
            for recording in recordings:
                recording.stop()
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


def api_cpu_ms(scenario: Scenario, result: ScenarioResult) -> float:
    """The accounts process's CPU per successful call of a one-lane scenario (nan: no calls)."""
    calls = len(result.lanes[scenario.lanes[0].name].latencies_ms)
    return 1000 * result.cpu.get(scenario.service.name, 0.0) / calls if calls else math.nan


def summary(plan: list[Scenario], results: list[ScenarioResult]) -> tuple[list[str], list[str]]:
    """Issue 7's line and the summary line (last), for 12 MP CreateUser; the targets missed."""
    found = {(p.key, p.service.name): (p, r) for p, r in zip(plan, results, strict=True) if p.key}
    lines = []
    if {("bytes", "background"), ("bytes", "inline")} <= set(found):
        background = found["bytes", "background"][1].lanes["CreateUser"]
        inline = found["bytes", "inline"][1].lanes["CreateUser"]
        speedup = background.rate / inline.rate if inline.rate else math.inf
        p99_ratio = background.percentile(0.99) / inline.percentile(0.99)
        lines.append(
            f"createuser background/inline speedup={speedup:.1f} p99_ratio={p99_ratio:.2f}"
        )
    wanted = [("object", "background"), ("bytes", "background"), ("bytes", "inline")]
    if not set(wanted) <= set(found):
        return [*lines, "api cpu class=12mp (12 MP CreateUser scenarios not all run)"], []
    obj, raw, inline_ms = (api_cpu_ms(*found[key]) for key in wanted)
    obj_ratio, bytes_ratio = obj / inline_ms, raw / inline_ms
    missed = []
    if not obj_ratio <= OBJECT_RATIO_TARGET:
        missed.append(f"api cpu 12mp object/inline {obj_ratio:.3f} is above 1/20")
    if not bytes_ratio <= BYTES_RATIO_TARGET:
        missed.append(f"api cpu 12mp bytes/inline {bytes_ratio:.3f} is above 1/8")
    lines.append(
        f"api cpu class=12mp object_ms={obj:.1f} bytes_ms={raw:.1f} inline_ms={inline_ms:.1f} "
        f"object/inline={obj_ratio:.3f} bytes/inline={bytes_ratio:.3f}"
    )
    return lines, missed


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
    parser.add_argument(
        "--compare-tree", type=Path, help="also CreateUser against accounts from this copy"
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy records each accounts process into this folder"
    )
    args = parser.parse_args()
    with stack("load-", services=("accounts",), env=bench_limits(args.callers)) as s:
        processes = {"background": (s.accounts.pid, s.accounts_addr)}
        inline_port = free_port()
        inline = s.start_service(
            "inline",
            [sys.executable, str(BENCH / "inline_accounts.py"), "--render-in", args.inline_render],
            env={"ACCOUNTS_PORT": str(inline_port), "DATABASE_URL": s.pg.create_database("inline")},
        )
        processes["inline"] = (inline.pid, f"127.0.0.1:{inline_port}")
        if args.compare_tree:
            processes["before"] = start_before(s, args.compare_tree.resolve())
        try:
            plan, results = asyncio.run(measure(s, processes, args))
        except BaseException:
            s.note(f"failed; logs kept in {s.root}")
            raise
        root = s.root
    report(plan, results, args)
    if args.profile:
        for path in sorted(args.profile.glob("accounts-*.txt")):
            pyspy.print_top(path.stem, path, count=25)
    lines, missed = summary(plan, results)
    shutil.rmtree(root, ignore_errors=True)
    for miss in missed:
        print(f"TARGET MISSED: {miss}")
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(f"{lines[-1]}\n")
    print("\n".join(lines))
    return 1 if missed else 0


def start_before(s: Stack, tree: Path) -> tuple[int | None, str]:
    """accounts_service from `tree` (its own database), ahead of this checkout on sys.path."""
    if not (tree / "accounts_service").is_dir():
        raise SystemExit(f"--compare-tree: no accounts_service in {tree}")
    port = free_port()
    boot = (
        f"import runpy, sys; sys.path.insert(0, {str(tree)!r}); "
        "runpy.run_module('accounts_service', run_name='__main__', alter_sys=True)"
    )
    before = s.start_service(
        "before",
        [sys.executable, "-c", boot],
        env={"ACCOUNTS_PORT": str(port), "DATABASE_URL": s.pg.create_database("before")},
        kind="accounts",
    )
    return before.pid, f"127.0.0.1:{port}"


if __name__ == "__main__":
    sys.exit(main())
