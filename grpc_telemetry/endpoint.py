"""The HTTP endpoint that serves a Prometheus registry at GET /metrics, in a thread of its own."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, disable_created_metrics, start_http_server


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


def serve(port: int, registry: CollectorRegistry) -> Endpoint:
    """Serves `registry` on 0.0.0.0:`port`; raises OSError when the port is taken."""
    # No *_created series: they would double the count for little use. (Untyped upstream.)
    disable_created_metrics()  # type: ignore[no-untyped-call]
    server, thread = start_http_server(port, registry=registry)
    return Endpoint(server, thread)
