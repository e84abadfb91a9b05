"""The worker's efficiency (the bare renderer's CPU against the worker's) and create-to-READY
latency, per class of avatar.

    python bench/pipeline.py [--classes 12mp,0.3mp] [--rounds 5] [--users N] [--rate 5]
                             [--latency-seconds 20] [--summary FILE] [--profile DIR]

Starts a private stack (bench/stack.py): NATS, S3 (weed mini), PostgreSQL, the accounts service
and the imaging worker with RENDER_PROCESSES = `--processes` (default: the number of cores).

Efficiency, per class (bench/photos.py: the four bench photos, or their 12 MP versions, in
turn): in each of `--rounds` rounds, in an order alternating from round to round,
- bare: the renderer alone (imaging_service.render.render) over N of the same images in as many
  processes as the worker has, each process holding the images already; its CPU is the time of
  the render calls in those processes;
- drain: the worker alone on a backlog. Its JetStream consumer is paused, N users are created
  (their events wait in the stream), then it is resumed and works them off; the CPU of every
  process (/proc, bench/procstat.py) is read from the resume until the consumer has no message
  left, delivered or not, and every user is checked READY afterwards. The worker's CPU is that
  of the imaging process tree: its main process, the fork server and the render processes
  (recycled ones included).
render_cpu_ms and worker_cpu_ms are per avatar over all the rounds; ratio = render / worker.
Pausing the consumer, rather than stopping the worker, keeps its start-up out of the figures and
its render processes warm. S3, PostgreSQL, NATS and accounts are reported beside, not counted.

Latency, per class: users created at a fixed rate (`--rate`, open loop) for `--latency-seconds`,
each watched with WatchUser from the moment CreateUser answers; e2e = READY seen - CreateUser
sent. Beside it, the time the worker spent on the job (its "job finished" log line), the stages
the services record (their Prometheus histograms) and the render time of the same images alone
in this process, before and after.

Ends with, for each class, `worker efficiency class=C render_cpu_ms=X worker_cpu_ms=Y ratio=Z`,
then `e2e latency class=C p50_ms=P p99_ms=Q render_ms=R`; exits 1 when a target of issue 13 is
missed (see pipeline_report.py), except with `--profile` (py-spy slows the services down).
With `--profile DIR`, py-spy records the accounts service and the worker (with its render
processes) during the drains, and the functions they spend their time in are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import nats
import photos
import pipeline_report
import procstat
import promtext
import pyspy
from accounts.v1 import accounts_pb2, accounts_pb2_grpc
from pipeline_report import ClassResult, Latency, Run
from stack import Stack, stack

from grpc_guard.status import retry_delay
from imaging_service.render import DEFAULT_SIZES, render
from imaging_service.settings import Settings

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]
USERS = {"12mp": 100, "0.3mp": 240}  # a drain of about 5 s on this machine
CREATORS = 16  # accounts' MAX_CONCURRENT_UPLOADS, by default
CHECKERS = 8
BUSY = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
TIMEOUT = 300.0
POLL_SECONDS = 0.1  # the consumer's state, while a drain runs: its API costs NATS CPU
READY = accounts_pb2.THUMBNAIL_STATUS_READY
FAILED = accounts_pb2.THUMBNAIL_STATUS_FAILED
STREAM, DURABLE = Settings.stream, Settings.durable  # the worker's defaults, as the stack runs it
PAUSED_UNTIL = "2100-01-01T00:00:00Z"

# The bare renderer's processes: the images are loaded once, each task renders one of them.
_images: list[bytes] = []


def _load(images: list[bytes]) -> None:
    _images[:] = images


def _render_one(index: int) -> float:
    """CPU seconds of one render in this process."""
    started = time.process_time()
    render(_images[index % len(_images)], DEFAULT_SIZES)
    return time.process_time() - started


async def _while_busy(call: Callable[[], Awaitable[Any]], attempts: int | None = None) -> Any:
    """`call()` again while accounts answers that it is busy (its in-flight limits, or its
    database pool), after the RetryInfo delay it asks for; `attempts` at most, if given."""
    tried = 0
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            tried += 1
            if exc.code() not in BUSY or (attempts is not None and tried >= attempts):
                raise
            await asyncio.sleep(retry_delay(exc) or 0.2)


class Client:
    """CreateUser then WatchUser until the thumbnails settle, against the stack's accounts."""

    def __init__(self, stub: Any) -> None:
        self._stub = stub

    async def create(self, image: bytes) -> str:
        request = accounts_pb2.CreateUserRequest(
            email=f"pipe-{uuid.uuid4().hex}@example.com",
            display_name="Pipeline",
            avatar_image=image,
        )
        user = await _while_busy(lambda: self._stub.CreateUser(request, timeout=TIMEOUT))
        return str(user.id)

    async def statuses(self, user_ids: Sequence[str]) -> list[int]:
        """Each user's thumbnail status, a few GetUser calls at a time (hundreds at once
        exhaust accounts' database pool), each tried again while accounts is busy."""
        gate = asyncio.Semaphore(CHECKERS)

        async def one(user_id: str) -> int:
            request = accounts_pb2.GetUserRequest(id=user_id)
            async with gate:
                user = await _while_busy(
                    lambda: self._stub.GetUser(request, timeout=TIMEOUT), attempts=20
                )
            return int(user.thumbnail_status)

        return list(await asyncio.gather(*(one(user_id) for user_id in user_ids)))

    async def settled(self, user_id: str) -> int:
        """Waits on a WatchUser stream for READY or FAILED; returns which."""
        call = self._stub.WatchUser(accounts_pb2.WatchUserRequest(id=user_id), timeout=TIMEOUT)
        try:
            async for user in call:
                if user.thumbnail_status in (READY, FAILED):
                    return int(user.thumbnail_status)
        finally:
            call.cancel()
        raise RuntimeError(f"WatchUser of {user_id} ended before the thumbnails settled")


class Groups:
    """The process trees whose CPU time is accounted, and the machine's busy time."""

    def __init__(self, s: Stack) -> None:
        self._trees: dict[str, tuple[int | None, bool]] = {
            "accounts": (s.accounts.pid, True),
            "imaging+render": (s.imaging.pid, True),
            "imaging": (s.imaging.pid, False),
            "weed": (s.s3.process.pid, True),
            "postgres": (s.pg.process.pid, True),
            "nats": (s.nats.process.pid, True),
        }

    def snapshot(self) -> dict[str, float]:
        cpu = procstat.snapshot(self._trees)
        cpu["render processes"] = cpu.pop("imaging+render") - cpu["imaging"]
        times = os.times()
        cpu["bench client"] = times.user + times.system
        cpu["machine"] = procstat.machine_busy()
        return cpu


class Valve:
    """Pauses and resumes the worker's JetStream consumer, and reads its backlog."""

    def __init__(self, nc: Any) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._jsm = nc.jsm()

    @classmethod
    async def connect(cls, url: str) -> Valve:
        return cls(await nats.connect(url, name="bench-pipeline"))

    async def close(self) -> None:
        await self._nc.close()

    async def pause(self) -> None:
        await self._jsm.pause_consumer(STREAM, DURABLE, PAUSED_UNTIL)

    async def resume(self) -> None:
        await self._jsm.resume_consumer(STREAM, DURABLE)

    async def until(self, pending: int, ack_pending: int) -> None:
        """Waits until the consumer has exactly this many messages not delivered and delivered
        but not acked."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            info = await self._js.consumer_info(STREAM, DURABLE)
            if (info.num_pending or 0, info.num_ack_pending or 0) == (pending, ack_pending):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"consumer still at {info.num_pending}/{info.num_ack_pending}")
            await asyncio.sleep(POLL_SECONDS)


async def created(client: Client, images: Sequence[bytes], users: int) -> list[str]:
    gate = asyncio.Semaphore(CREATORS)

    async def one(i: int) -> str:
        async with gate:
            return await client.create(images[i % len(images)])

    return await asyncio.gather(*(one(i) for i in range(users)))


async def drain_run(
    s: Stack, client: Client, valve: Valve, images: Sequence[bytes], users: int
) -> Run:
    """The worker alone on `users` avatars: created while its consumer is paused, then worked
    off; the CPU and the time from the resume until the last job is acked. Nobody watches the
    users meanwhile (WatchUser streams would load the machine beside the worker); each is
    checked READY afterwards."""
    await valve.pause()
    ids = await created(client, images, users)
    await valve.until(pending=users, ack_pending=0)  # every event relayed to the stream
    groups = Groups(s)
    before = groups.snapshot()
    started = time.perf_counter()
    await valve.resume()
    await valve.until(pending=0, ack_pending=0)
    seconds = time.perf_counter() - started
    cpu = procstat.delta(groups.snapshot(), before)
    statuses = await client.statuses(ids)
    if (not_ready := len(ids) - statuses.count(READY)) > 0:
        raise RuntimeError(f"{not_ready} of {len(ids)} users not READY after the drain")
    return Run(users, seconds, cpu)


def bare_run(pool: ProcessPoolExecutor, users: int) -> Run:
    started = time.perf_counter()
    cpu = sum(pool.map(_render_one, range(users)))
    return Run(users, time.perf_counter() - started, {"render (bare)": cpu})


async def efficiency(
    s: Stack, client: Client, valve: Valve, cls: str, images: list[bytes], args: argparse.Namespace
) -> tuple[list[Run], list[Run]]:
    """(bare runs, drains), one of each per round, in alternating order."""
    users = args.users or USERS[cls]
    context = multiprocessing.get_context("forkserver")
    bare: list[Run] = []
    drained: list[Run] = []
    with ProcessPoolExecutor(
        args.processes, mp_context=context, initializer=_load, initargs=(images,)
    ) as pool:
        list(pool.map(_render_one, range(2 * args.processes * len(images))))  # warm
        await drain_run(s, client, valve, images, 2 * args.processes * len(images))  # warm
        for round_ in range(args.rounds):
            for kind in ("bare", "drain") if round_ % 2 == 0 else ("drain", "bare"):
                if kind == "bare":
                    bare.append(bare_run(pool, users))
                    continue
                profile = _profile(s, args, f"{cls}-round{round_ + 1}")
                drained.append(await drain_run(s, client, valve, images, users))
                for recording in profile:
                    recording.stop()
            b, d = bare[-1], drained[-1]
            s.note(
                f"{cls} round {round_ + 1}/{args.rounds}: render {b.ms('render (bare)'):.1f} ms, "
                f"worker {d.ms('render processes', 'imaging'):.1f} ms CPU per avatar; "
                f"drain {d.rate:.1f}/s, bare {b.rate:.1f}/s"
            )
    return bare, drained


def _profile(s: Stack, args: argparse.Namespace, name: str) -> list[pyspy.Recording]:
    if args.profile is None:
        return []
    return [
        pyspy.Recording(s.accounts.pid or 0, args.profile / f"accounts-{name}.txt"),
        pyspy.Recording(
            s.imaging.pid or 0, args.profile / f"imaging-{name}.txt", subprocesses=True
        ),
    ]


async def latency(
    s: Stack, client: Client, cls: str, images: list[bytes], args: argparse.Namespace
) -> Latency:
    """Open loop at args.rate users/s for args.latency_seconds."""
    out = Latency()
    groups = Groups(s)
    count = int(args.rate * args.latency_seconds)
    ids: dict[str, float] = {}
    before = groups.snapshot()
    started = time.perf_counter()

    async def one(i: int) -> None:
        await asyncio.sleep(max(0.0, started + i / args.rate - time.perf_counter()))
        sent = time.perf_counter()
        user_id = await client.create(images[i % len(images)])
        out.create_ms.append(1000 * (time.perf_counter() - sent))
        status = await client.settled(user_id)
        if status != READY:
            out.failed += 1
            return
        ids[user_id] = 1000 * (time.perf_counter() - sent)
        out.sent[user_id] = sent - started

    scraped = {name: promtext.scrape(port) for name, port in metrics_ports(s).items()}
    await asyncio.gather(*(one(i) for i in range(count)))
    await asyncio.sleep(0.5)  # the last acks and relays, in the CPU figures
    out.cpu = procstat.delta(groups.snapshot(), before)
    after = {name: promtext.scrape(port) for name, port in metrics_ports(s).items()}
    out.stages_ms = promtext.histogram_means_ms(
        scraped["imaging"], after["imaging"], "imaging_job_stage_seconds", "stage"
    )
    for name, (service, histogram) in SERVICE_HISTOGRAMS.items():
        if mean := promtext.histogram_mean_ms(scraped[service], after[service], histogram):
            out.stages_ms[name] = mean
    out.e2e_ms = list(ids.values())
    out.e2e_by_user = ids
    jobs = job_durations(s.imaging.log_text())
    out.job_ms = [jobs[user_id] for user_id in ids if user_id in jobs]
    out.job_by_user = {user_id: jobs[user_id] for user_id in ids if user_id in jobs}
    return out


# Stages of the e2e latency that the services measure themselves (when they export metrics).
SERVICE_HISTOGRAMS = {
    "outbox publish lag": ("accounts", "accounts_outbox_publish_lag_seconds"),
    "time to thumbnail (accounts)": ("accounts", "accounts_time_to_thumbnail_seconds"),
    "job (imaging)": ("imaging", "imaging_job_seconds"),
}


def metrics_ports(s: Stack) -> dict[str, int]:
    return {
        "accounts": int(s.service_env["accounts"]["ACCOUNTS_METRICS_PORT"]),
        "imaging": int(s.service_env["imaging"]["IMAGING_METRICS_PORT"]),
    }


def job_durations(log: str) -> dict[str, float]:
    """user id -> ms the worker spent on its (last) job, from "job finished" log lines."""
    jobs = {}
    for line in log.splitlines():
        if '"job finished"' in line:
            entry = json.loads(line)
            if entry.get("outcome") == "done" and "duration_ms" in entry:
                jobs[entry["user_id"]] = float(entry["duration_ms"])
    return jobs


def render_ms(images: Sequence[bytes], repeats: int = 5) -> list[float]:
    """Wall ms of each image's render alone in this process, median of `repeats`."""
    medians = []
    for data in images:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            render(data, DEFAULT_SIZES)
            times.append(1000 * (time.perf_counter() - started))
        medians.append(statistics.median(times))
    return medians


async def measure(s: Stack, args: argparse.Namespace) -> list[ClassResult]:
    corpus = photos.classes()
    results = []
    valve = await Valve.connect(s.env["NATS_URL"])
    try:
        async with grpc.aio.insecure_channel(s.accounts_addr, options=CHANNEL_OPTIONS) as channel:
            client = Client(accounts_pb2_grpc.AccountsServiceStub(channel))
            for cls in args.classes:
                images = list(corpus[cls].values())
                bare, drained = await efficiency(s, client, valve, cls, images, args)
                alone = render_ms(images)
                lat = await latency(s, client, cls, images, args)
                alone = [statistics.mean(p) for p in zip(alone, render_ms(images), strict=True)]
                s.note(f"{cls} latency: {len(lat.e2e_ms)} users at {args.rate:g}/s")
                results.append(ClassResult(cls, bare, drained, lat, statistics.mean(alone)))
    finally:
        await valve.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", default="12mp,0.3mp")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--users", type=int, default=0, help=f"per drain (default {USERS})")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=float, default=5.0, help="users/s of the latency phase")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--summary", type=Path, help="also write the summary lines here")
    parser.add_argument("--profile", type=Path, help="py-spy recordings go to this folder")
    args = parser.parse_args()
    args.classes = args.classes.split(",")
    env = {"RENDER_PROCESSES": str(args.processes)}
    with stack("pipeline-", env=env) as s:
        try:
            results = asyncio.run(measure(s, args))
        except BaseException:
            s.note(f"failed; logs kept in {s.root}")
            raise
        root = s.root
    pipeline_report.report(results, args)
    shutil.rmtree(root, ignore_errors=True)
    if args.profile:
        for path in sorted(args.profile.glob("*.txt")):
            pyspy.print_top(path.stem, path)
    lines, missed = pipeline_report.summary(results)
    for miss in missed:
        print(f"TARGET MISSED: {miss}")
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text("".join(f"{line}\n" for line in lines))
    print("\n".join(lines))
    return 1 if missed and args.profile is None else 0  # profiled runs are slower


if __name__ == "__main__":
    sys.exit(main())
