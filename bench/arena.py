"""Does MALLOC_ARENA_MAX=2 keep the imaging service's main process smaller?

    python bench/arena.py [--users 400]

Runs the same pipeline twice on a private stack, once with glibc's default arenas and once with
MALLOC_ARENA_MAX=2 for the services, and prints the resident memory (VmRSS, VmHWM) of each
service's main process after all users are READY. The worker's main process is the one with
threads (S3 calls run in a thread pool); its render processes are single-threaded and measured
by `make bench-soak` instead.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from accounts.v1 import accounts_pb2, accounts_pb2_grpc
from photos import phone_jpeg
from stack import stack

from devstack.net import wait_until

IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "images"
SMALL = ["photo_chelsea.png", "photo_coffee_progressive_q80.jpg", "photo_china_original.jpg"]


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def run(env: dict[str, str], images: list[bytes], users: int) -> dict[str, tuple[int, int]]:
    with stack("arena-", env=env) as s:
        channel = grpc.insecure_channel(
            s.accounts_addr, options=[("grpc.max_send_message_length", 64 << 20)]
        )
        stub = accounts_pb2_grpc.AccountsServiceStub(channel)

        def create(i: int) -> str:
            request = accounts_pb2.CreateUserRequest(
                email=f"arena-{uuid.uuid4().hex[:12]}@example.com", display_name="Arena",
                avatar_image=images[i % len(images)],
            )  # fmt: skip
            return str(stub.CreateUser(request, timeout=60).id)

        with ThreadPoolExecutor(8) as workers:
            ids = list(workers.map(create, range(users)))

        def all_ready() -> bool:
            statuses = [
                stub.GetUser(accounts_pb2.GetUserRequest(id=i), timeout=10).thumbnail_status
                for i in ids
            ]
            return all(st == accounts_pb2.THUMBNAIL_STATUS_READY for st in statuses)

        wait_until(all_ready, 600, "every user READY")
        result = {}
        for name, process in (("accounts", s.accounts), ("imaging", s.imaging)):
            pid = process.pid
            assert pid is not None
            result[name] = (status_kib(pid, "VmRSS"), status_kib(pid, "VmHWM"))
        channel.close()
        return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=400)
    args = parser.parse_args()
    small = [(IMAGES / name).read_bytes() for name in SMALL]
    images = [*small, phone_jpeg(small[1], seed=1)]
    started = time.monotonic()
    runs = {
        "default arenas": run({}, images, args.users),
        "MALLOC_ARENA_MAX=2": run({"MALLOC_ARENA_MAX": "2"}, images, args.users),
    }
    for label, result in runs.items():
        for name, (rss, hwm) in result.items():
            print(f"{label:20} {name:9} rss_mib={rss / 1024:.1f} peak_mib={hwm / 1024:.1f}")
    base, capped = runs["default arenas"]["imaging"][0], runs["MALLOC_ARENA_MAX=2"]["imaging"][0]
    print(f"imaging main process rss arena_max2/default={capped / base:.2f} "
          f"({time.monotonic() - started:.0f} s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
