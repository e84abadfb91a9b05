"""The HTTP endpoint that serves a Prometheus registry at GET /metrics, in a thread of its own."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)

log = logging.getLogger(__name__)


@dataclass
class Endpoint:
    """The HTTP server answering GET /metrics, in a thread of its own."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(
    port: int, registry: CollectorRegistry, setting: str, error: type[Exception]
) -> Endpoint | None:
    """Serves `registry` on 0.0.0.0:`port`; None when `port` is 0. A taken port raises `error`
    naming `setting`, so the service stops at start with one clear line."""
    if port == 0:
        return None
    # No *_created series: they would double the count for little use. (Untyped upstream.)
    disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        server, thread = start_http_server(port, registry=registry)
    except OSError as exc:
        raise error(f"{setting}: cannot listen on {port}: {exc}") from exc
    log.info("metrics listening", extra={"metrics_port": int(server.server_port)})
    return Endpoint(server, thread)


def add_process_collectors(registry: CollectorRegistry) -> None:
    """process_* (process_start_time_seconds shows restarts) and python_* metrics."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
