"""Ports and polling on 127.0.0.1: pick free ports, probe TCP and HTTP, wait for readiness."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable

LOCALHOST = "127.0.0.1"
_POLL_INTERVAL = 0.05


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (someone may still take it)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: every socket stays bound until all are picked."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sockets.append(sock)
            sock.bind((LOCALHOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return False
    return True


def port_open(host: str, port: int) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate` until it is true; TimeoutError naming `what` after `timeout` seconds.

    Exceptions from `predicate` propagate at once (use them for "this will never happen").
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not ready after {timeout:g} s")
        time.sleep(_POLL_INTERVAL)


async def eventually(predicate: Callable[[], bool], within: float, what: str) -> None:
    """`wait_until` for a coroutine: polls without blocking the event loop, so that what makes
    `predicate` true (a callback, another task) runs meanwhile."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not ready after {within:g} s")
        await asyncio.sleep(_POLL_INTERVAL)


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_ok(url: str) -> bool:
    try:
        with _NO_PROXY_OPENER.open(url, timeout=1.0) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def http_json(url: str) -> object:
    """The JSON document at `url`; None if it cannot be fetched or parsed."""
    try:
        with _NO_PROXY_OPENER.open(url, timeout=2.0) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return None
