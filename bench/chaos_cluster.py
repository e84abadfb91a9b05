"""Chaos on a cluster: `make chaos` with every piece replicated, and replicas killed and rolled.

    python bench/chaos_cluster.py [--users 600]

Starts its own 3-node NATS cluster (streams R3), S3 (weed mini), a private PostgreSQL, 2 accounts
and 3 imaging replicas, then creates users from mixed images at a steady pace through both
accounts replicas (the client balances round robin, as imaging does towards accounts) while, on
a schedule, it SIGKILLs the NATS server leading the ACCOUNTS stream and starts it again once
another leads, SIGKILLs one accounts and one imaging replica and starts them again, and rolls
every replica as a Deployment rollout would (maxUnavailable=1: SIGTERM, wait for the exit, start,
wait until it serves; then the next). It ends with one line

    cluster users=N ready=R failed_expected=F failed_unexpected=U stuck=S duplicates_renders=D
        leader_kills=K accounts_share=A0,A1 imaging_share=I0,I1,I2

(on one line): the counts of `make chaos`, the ACCOUNTS leaders SIGKILLed, and the fraction of
the users created by each accounts replica and of the renders done by each imaging replica (from
their logs). It exits non-zero unless `make chaos` would pass, every fault was carried out (one
leader killed, every SIGTERM ended in a clean exit) and each replica did at least a fifth of its
fair share. The logs stay in the folder printed on failure.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from accounts.v1 import accounts_pb2_grpc
from chaos import (
    CHAOS_ENV,
    Outcome,
    corpus,
    create_all,
    duplicates,
    keep_logs_unless,
    renders,
    settle,
    summary,
)
from stack import Stack, stack

from devstack.net import http_json, wait_until
from grpc_guard.options import CLIENT_OPTIONS

REPLICAS = {"accounts": 2, "imaging": 3}
NATS_NODES = 3
RENDER_PROCESSES = 1
CLUSTER_ENV = {
    **CHAOS_ENV,
    "STREAM_REPLICAS": "3",
    "RENDER_PROCESSES": str(RENDER_PROCESSES),
    # Shared by every replica's fetches: room for each replica's jobs, and as many again held
    # by a killed replica until their ack wait runs out.
    "MAX_ACK_PENDING": str(2 * REPLICAS["imaging"] * RENDER_PROCESSES),
    # Short, so that clients connect again to a replica that was restarted within the run.
    "MAX_CONNECTION_AGE_SECONDS": "20",
    "MAX_CONNECTION_AGE_GRACE_SECONDS": "5",
}
STREAM = "ACCOUNTS"
LEADER_TIMEOUT = 60.0  # an election takes about 6 s here
MIN_FAIR_SHARE = 0.2  # a replica doing less than this fraction of 1/replicas fails the run


@dataclass
class Faults:
    """What the schedule did, and what went wrong while doing it."""

    leader_kills: int = 0
    problems: list[str] = field(default_factory=list)


def kill_leader(s: Stack, faults: Faults) -> None:
    """SIGKILLs the server leading the ACCOUNTS stream, waits for another to lead, restarts it."""
    cluster = s.cluster
    leader = ""

    def led() -> bool:
        nonlocal leader
        leader = cluster.stream_leader(STREAM) or ""
        return bool(leader)

    wait_until(led, LEADER_TIMEOUT, f"a leader of {STREAM}")
    node = cluster.node(leader)
    page = http_json(f"{node.monitor_url}/connz")
    clients = page.get("num_connections", "?") if isinstance(page, dict) else "?"
    s.note(f"SIGKILL NATS {leader}, leader of {STREAM}, with {clients} client connections")
    node.kill()
    faults.leader_kills += 1
    killed_at = time.monotonic()
    wait_until(lambda: led() and leader != node.name, LEADER_TIMEOUT, f"a new {STREAM} leader")
    s.note(f"{leader} leads {STREAM} after {time.monotonic() - killed_at:.1f} s")
    node.start()
    s.note(f"NATS {node.name} back")


def kill_replica(s: Stack, name: str) -> None:
    process = s.services[name]
    s.note(f"SIGKILL {name}")
    process.kill()
    wait_until(lambda: not process.running, 10, f"{name} gone")
    s.start_again(name)
    s.note(f"{name} serving again")


def roll(s: Stack, faults: Faults, kind: str) -> None:
    """One replica at a time: SIGTERM, wait for it to exit, start it, wait until it serves."""
    grace = float(s.service_env[s.replicas(kind)[0]].get("SHUTDOWN_GRACE_SECONDS", "20"))
    for name in s.replicas(kind):
        s.note(f"rollout: SIGTERM {name}")
        started = time.monotonic()
        # Past the grace period and a margin, `terminate` SIGKILLs: a failed clean shutdown.
        code = s.services[name].terminate(grace + 15)
        took = time.monotonic() - started
        if code != 0:
            faults.problems.append(f"{name} exited with code {code} {took:.1f} s after SIGTERM")
        s.start_again(name)
        s.note(f"rollout: {name} exited ({code}) after {took:.1f} s and serves again")


def schedule(s: Stack, faults: Faults, done: threading.Event) -> None:
    """(seconds after the first CreateUser, what to break); each runs after the one before."""
    steps: list[tuple[float, str, Callable[[], None]]] = [
        (6, "kill the ACCOUNTS leader", lambda: kill_leader(s, faults)),
        (25, "kill accounts-1", lambda: kill_replica(s, "accounts-1")),
        (35, "kill imaging-1", lambda: kill_replica(s, "imaging-1")),
        (50, "roll accounts", lambda: roll(s, faults, "accounts")),
        (50, "roll imaging", lambda: roll(s, faults, "imaging")),
    ]
    started = time.monotonic()
    for at, what, action in steps:
        if done.wait(max(0.0, started + at - time.monotonic())):
            return
        try:
            action()
        except Exception as exc:  # the run goes on; the verdict fails
            faults.problems.append(f"{what}: {exc}")
            s.note(f"{what} failed: {exc}")


def shares(counts: list[int]) -> list[float]:
    total = sum(counts)
    return [n / total if total else 0.0 for n in counts]


def served(s: Stack, kind: str, count: Callable[[str], int]) -> list[int]:
    return [count(s.services[name].log_text()) for name in s.replicas(kind)]


def users_created(accounts_log: str) -> int:
    return sum('"user created"' in line for line in accounts_log.splitlines())


def fair(name: str, fractions: list[float], faults: Faults) -> None:
    floor = MIN_FAIR_SHARE / len(fractions)
    for i, fraction in enumerate(fractions):
        if fraction < floor:
            faults.problems.append(f"{name}-{i} did {fraction:.2f} of the work (< {floor:.2f})")


def run(
    s: Stack,
    faults: Faults,
    images: list[tuple[str, bytes, bool]],
    outcomes: list[Outcome],
    args: argparse.Namespace,
) -> None:
    """Creates the users while the schedule runs, then waits for them to settle."""
    done = threading.Event()
    chaos = threading.Thread(target=schedule, args=(s, faults, done), daemon=True)
    with grpc.insecure_channel(s.accounts_addr, options=CLIENT_OPTIONS) as channel:
        stub = accounts_pb2_grpc.AccountsServiceStub(channel)
        chaos.start()
        try:
            create_all(stub, images, outcomes, args.create_seconds)
            chaos.join()
            s.note("all users created, waiting for them to settle")
            settle(stub, outcomes, args.settle_seconds)
        finally:
            done.set()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=600)
    parser.add_argument("--create-seconds", type=float, default=150.0)
    parser.add_argument("--settle-seconds", type=float, default=240.0)
    parser.add_argument("--keep-logs", action="store_true", help="even when the run passes")
    args = parser.parse_args()
    images = corpus()
    outcomes = [Outcome(images[i % len(images)][0], images[i % len(images)][2])
                for i in range(args.users)]  # fmt: skip
    faults = Faults()
    with stack("cluster-", env=CLUSTER_ENV, database="chaos", nats_nodes=NATS_NODES,
               replicas=REPLICAS) as s:  # fmt: skip
        root = s.root
        try:
            run(s, faults, images, outcomes, args)
        except BaseException:
            s.note(f"failed; logs kept in {root}")
            raise
        imaging_logs = [s.services[name].log_text() for name in s.replicas("imaging")]
        dupes = duplicates("\n".join(imaging_logs))
        accounts_share = shares(served(s, "accounts", users_created))
        imaging_share = shares(served(s, "imaging", lambda log: len(renders(log))))
        s.note("stopping the stack")
    line, ok = summary(outcomes, dupes)
    fair("accounts", accounts_share, faults)
    fair("imaging", imaging_share, faults)
    if faults.leader_kills != 1:
        faults.problems.append(f"{faults.leader_kills} {STREAM} leaders killed, not 1")
    for problem in faults.problems:
        print(f"[cluster] problem: {problem}", flush=True)
    ok = ok and not faults.problems
    keep_logs_unless(ok and not args.keep_logs, root)
    print(
        f"cluster {line} leader_kills={faults.leader_kills} "
        f"accounts_share={','.join(f'{f:.2f}' for f in accounts_share)} "
        f"imaging_share={','.join(f'{f:.2f}' for f in imaging_share)}",
        flush=True,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
