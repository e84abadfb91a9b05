"""Prometheus metrics of the accounts service (grpc_telemetry.endpoint serves the registry).

Every metric lives in the registry of one `Metrics` object that main.py makes and passes in; a
component built without one records into a private registry that nobody scrapes.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from grpc_telemetry.server import RpcMetrics

LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
TOTAL_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.rpc = RpcMetrics(r)
        self.outbox_published = Counter(
            "accounts_outbox_published_total",
            "Outbox events that JetStream confirmed.",
            registry=r,
        )
        self.outbox_publish_errors = Counter(
            "accounts_outbox_publish_errors_total",
            "Outbox publish attempts that failed (the event stays in the outbox).",
            registry=r,
        )
        self.outbox_unpublished = Gauge(
            "accounts_outbox_unpublished_events",
            "Events waiting in the outbox, as last counted by this replica's relay.",
            registry=r,
        )
        self.outbox_publish_lag = Histogram(
            "accounts_outbox_publish_lag_seconds",
            "From an outbox row's insert to JetStream's confirmation of its event.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.time_to_thumbnail = Histogram(
            "accounts_time_to_thumbnail_seconds",
            "From the request for thumbnails (users.requested_at) to the result recorded by "
            "UpdateThumbnails, by the status it set.",
            ("status",),
            buckets=TOTAL_BUCKETS,
            registry=r,
        )
