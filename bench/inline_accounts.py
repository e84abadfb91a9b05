"""Benchmark only: the accounts service with the render done inside CreateUser, the baseline.

    python bench/inline_accounts.py [--render-in thread|loop]   (environment as accounts_service)

This is the design DESIGN.md argues against, built from the real parts so that bench/load.py
compares like with like: CreateUser runs the normal use case (header check, original stored,
user and event committed), then renders the three thumbnails with the same renderer as the
imaging service (imaging_service.render.render), stores them under the same keys, records them
with the same use case as UpdateThumbnails (READY) and answers the READY user. Every other RPC
is the normal servicer's. Served through accounts_service.main.serve's `servicer_factory`.

Where the render runs (`--render-in`):
- thread (the default): in a pool of one thread per core, off the event loop, as a careful
  inline API would; Pillow releases the GIL while decoding and resizing, so it can use every
  core. The stronger baseline, so the speedup measured against it is the smaller one;
- loop: on the event loop itself, what a naive async handler does; one core, and every other
  call waits behind each render.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from accounts.v1 import accounts_pb2

from accounts_service.adapters.storage import Storage
from accounts_service.api.servicer import AccountsServicer
from accounts_service.api.status import translated
from accounts_service.main import serve
from accounts_service.results import RenderedThumbnail
from accounts_service.settings import SettingsError, from_env
from accounts_service.users import Users
from accounts_service.watch import Watcher
from imaging_service.render import ImageRejected, Thumbnail, render
from object_keys import SIZES, thumbnail_key
from service_logs import json_lines

PNG = "image/png"


class InlineServicer(AccountsServicer):
    def __init__(
        self,
        users: Users,
        watcher: Watcher,
        storage: Storage,
        *,
        executor: ThreadPoolExecutor | None,  # None: render on the event loop
    ) -> None:
        super().__init__(users, watcher, storage)
        self._inline_users = users
        self._inline_storage = storage
        self._executor = executor

    @translated
    async def CreateUser(self, request: Any, context: Any) -> accounts_pb2.User:
        if request.WhichOneof("avatar") != "avatar_image":
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the benchmark sends avatar_image")
        data = request.avatar_image
        user = await self._inline_users.create(
            request.email, request.display_name, data, request.request_id
        )
        generation = user.avatar_generation
        try:
            thumbnails = await self._render(data)
        except ImageRejected as exc:
            failed = await self._inline_users.update_thumbnails(
                str(user.id), generation, None, (exc.code, exc.reason)
            )
            return self._user(failed)
        names = {size: name for name, size in SIZES.items()}
        stored = [
            RenderedThumbnail(
                name=names[t.size],
                object=thumbnail_key(user.id, generation, names[t.size]),
                width=t.size,
                height=t.size,
                size_bytes=len(t.png),
            )
            for t in thumbnails
        ]
        await asyncio.gather(
            *(
                self._inline_storage.put_original(s.object, t.png, PNG)
                for s, t in zip(stored, thumbnails, strict=True)
            )
        )
        ready = await self._inline_users.update_thumbnails(str(user.id), generation, stored, None)
        return self._user(ready)

    async def _render(self, data: bytes) -> list[Thumbnail]:
        sizes = tuple(SIZES.values())
        if self._executor is None:
            return render(data, sizes)  # blocks the event loop: the point of this mode
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, render, data, sizes)


async def run(render_in: str) -> None:
    settings = from_env(os.environ)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    executor = None
    if render_in == "thread":
        executor = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="inline-render")
    try:
        await serve(settings, stop, functools.partial(InlineServicer, executor=executor))
    finally:
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--render-in", choices=("thread", "loop"), default="thread")
    args = parser.parse_args()
    try:
        json_lines.configure(from_env(os.environ).log_level)
        asyncio.run(run(args.render_in))
    except SettingsError as exc:
        print(f"inline_accounts: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
