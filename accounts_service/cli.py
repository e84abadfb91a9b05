"""A small command-line client: python -m accounts_service.cli {create,get,list,watch,demo}."""

from __future__ import annotations

import argparse
import queue
import random
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import grpc
from accounts.v1 import accounts_pb2, accounts_pb2_grpc

from grpc_guard.options import CLIENT_OPTIONS
from grpc_guard.status import retry_delay

SAMPLE = Path(__file__).resolve().parent.parent / "docs" / "sample-avatar.jpg"
STATUS = accounts_pb2.ThumbnailStatus.Name
MAX_RETRIES = 5  # calls refused with RetryInfo (a busy server) are tried again this many times


def _stub(args: argparse.Namespace) -> tuple[grpc.Channel, Any]:
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024), *CLIENT_OPTIONS]
    if args.ca or args.cert:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(args.ca).read_bytes() if args.ca else None,
            private_key=Path(args.key).read_bytes() if args.key else None,
            certificate_chain=Path(args.cert).read_bytes() if args.cert else None,
        )
        channel = grpc.secure_channel(args.addr, credentials, options=options)
    else:
        channel = grpc.insecure_channel(args.addr, options=options)
    return channel, accounts_pb2_grpc.AccountsServiceStub(channel)


def _line(user: Any) -> str:
    status = STATUS(user.thumbnail_status).removeprefix("THUMBNAIL_STATUS_")
    extra = f" {user.failure_code}: {user.failure_reason}" if user.failure_code else ""
    return f"{user.id} {user.email} generation={user.avatar.generation} {status}{extra}"


def busy_wait(
    error: grpc.RpcError,
    attempt: int,
    deadline: float = float("inf"),
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Waits as long as the server asked (RetryInfo, plus up to a fifth more so that refused
    callers do not all come back at once) and returns True; False at once if the error asks
    for no retry, `attempt` retries were made already, or the wait would pass `deadline`
    (time.monotonic())."""
    delay = retry_delay(error)
    if delay is None or attempt >= MAX_RETRIES or time.monotonic() + delay >= deadline:
        return False
    details = error.details() if isinstance(error, grpc.Call) else ""
    print(f"server busy ({details}); retrying in {delay:g} s", file=sys.stderr)
    sleep(delay * random.uniform(1.0, 1.2))
    return True


def with_retries(
    method: Any, request: Any, timeout: float, sleep: Callable[[float], None] = time.sleep
) -> Any:
    """`method(request)`, tried again while the server refuses it with RetryInfo."""
    attempt = 0
    while True:
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as exc:
            if not busy_wait(exc, attempt, sleep=sleep):
                raise
            attempt += 1


def wait_settled(
    stub: Any,
    user_id: str,
    timeout: float,
    out: TextIO = sys.stdout,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Follows WatchUser until READY or FAILED, printing each state change with the time since
    the start (on a terminal also a live progress line); raises TimeoutError. A stream refused
    with RetryInfo is opened again after the delay, and one that ends with UNAVAILABLE (the
    server aged the connection out, or the replica is shutting down) at once, on whichever
    replica the channel picks, within `timeout`."""
    started = time.monotonic()
    attempt = ended = 0
    while True:
        try:
            return _follow(stub, user_id, started, timeout, out, wait_for_ready=ended > 0)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() < started + timeout:
                sleep(min(0.1 * 2**ended, 2.0))  # back-off; the call then waits for a replica
                ended += 1
                continue
            if not busy_wait(exc, attempt, started + timeout, sleep):
                raise
            attempt += 1


def _follow(
    stub: Any, user_id: str, started: float, timeout: float, out: TextIO, *, wait_for_ready: bool
) -> Any:
    left = started + timeout - time.monotonic()
    request = accounts_pb2.WatchUserRequest(id=user_id)
    call = stub.WatchUser(request, timeout=left, wait_for_ready=wait_for_ready)
    updates: queue.Queue[Any] = queue.Queue()

    def pump() -> None:
        try:
            for user in call:
                updates.put(user)
        except grpc.RpcError as exc:
            updates.put(exc)

    threading.Thread(target=pump, daemon=True).start()
    live = out.isatty()
    status = "watching"
    try:
        while True:
            try:
                item = updates.get(timeout=0.2)
            except queue.Empty:
                if live:
                    out.write(f"\r  {status} ... {time.monotonic() - started:.1f} s\x1b[K")
                    out.flush()
                continue
            if isinstance(item, grpc.RpcError):
                if item.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise TimeoutError(f"user {user_id} still {status} after {timeout:.0f} s")
                raise item
            status = STATUS(item.thumbnail_status).removeprefix("THUMBNAIL_STATUS_")
            prefix = "\r\x1b[K" if live else ""
            print(f"{prefix}  [{time.monotonic() - started:6.2f} s] {_line(item)}", file=out)
            out.flush()
            if item.thumbnail_status != accounts_pb2.THUMBNAIL_STATUS_PENDING:
                return item
    finally:
        call.cancel()


def save_thumbnails(user: Any, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    for name in ("small", "medium", "large"):
        thumb = getattr(user.thumbnails, name)
        path = out / f"{name}.png"
        with urllib.request.urlopen(thumb.url, timeout=10) as resp:
            path.write_bytes(resp.read())
        saved.append(path)
    return saved


def cmd_create(stub: Any, args: argparse.Namespace) -> int:
    user = with_retries(
        stub.CreateUser,
        accounts_pb2.CreateUserRequest(
            email=args.email, display_name=args.name, avatar_image=Path(args.image).read_bytes()
        ),
        timeout=30,
    )
    print(_line(user))
    if args.wait:
        user = wait_settled(stub, user.id, args.timeout)
    return 0 if user.thumbnail_status != accounts_pb2.THUMBNAIL_STATUS_FAILED else 1


def cmd_get(stub: Any, args: argparse.Namespace) -> int:
    print(with_retries(stub.GetUser, accounts_pb2.GetUserRequest(id=args.id), timeout=10))
    return 0


def cmd_watch(stub: Any, args: argparse.Namespace) -> int:
    user = wait_settled(stub, args.id, args.timeout)
    return 0 if user.thumbnail_status == accounts_pb2.THUMBNAIL_STATUS_READY else 1


def cmd_list(stub: Any, args: argparse.Namespace) -> int:
    token = ""
    while True:
        page = with_retries(
            stub.ListUsers,
            accounts_pb2.ListUsersRequest(page_size=args.page_size, page_token=token),
            timeout=10,
        )
        for user in page.users:
            print(_line(user))
        token = page.next_page_token
        if not token or not args.all:
            return 0


def cmd_demo(stub: Any, args: argparse.Namespace) -> int:
    image = Path(args.image)
    print(f"creating a user with avatar {image} ...", flush=True)
    started = time.monotonic()
    user = with_retries(
        stub.CreateUser,
        accounts_pb2.CreateUserRequest(
            email=f"demo-{uuid.uuid4().hex[:8]}@example.com",
            display_name="Demo User",
            avatar_image=image.read_bytes(),
        ),
        timeout=30,
    )
    print(f"  CreateUser answered in {1000 * (time.monotonic() - started):.0f} ms: {_line(user)}")
    user = wait_settled(stub, user.id, args.timeout)
    if user.thumbnail_status != accounts_pb2.THUMBNAIL_STATUS_READY:
        return 1
    print(f"READY after {time.monotonic() - started:.2f} s")
    for path in save_thumbnails(user, Path(args.out)):
        print(f"  saved {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m accounts_service.cli")
    parser.add_argument("--addr", default="localhost:50051", help="AccountsService address")
    parser.add_argument("--ca", help="TLS: CA certificate file that signed the server's")
    parser.add_argument("--cert", help="mutual TLS: client certificate file (with --key)")
    parser.add_argument("--key", help="mutual TLS: client private key file")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a user from an image file")
    create.add_argument("--email", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("image")
    create.add_argument("--wait", action="store_true", help="wait until READY or FAILED")
    create.add_argument("--timeout", type=float, default=60)
    get = sub.add_parser("get", help="show one user")
    get.add_argument("id")
    listing = sub.add_parser("list", help="list users")
    listing.add_argument("--page-size", type=int, default=50)
    listing.add_argument("--all", action="store_true", help="follow every page")
    watch = sub.add_parser("watch", help="print each state change until READY or FAILED")
    watch.add_argument("id")
    watch.add_argument("--timeout", type=float, default=60)
    demo = sub.add_parser("demo", help="create a user from a sample image and save thumbnails")
    demo.add_argument("--image", default=str(SAMPLE))
    demo.add_argument("--out", default="out")
    demo.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)
    commands = {
        "create": cmd_create,
        "get": cmd_get,
        "list": cmd_list,
        "watch": cmd_watch,
        "demo": cmd_demo,
    }
    channel, stub = _stub(args)
    try:
        return commands[args.command](stub, args)
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except TimeoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        channel.close()


if __name__ == "__main__":
    sys.exit(main())
