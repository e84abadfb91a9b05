"""Channel arguments for the services' gRPC servers: message limits, streams per connection,
pending calls and keepalive."""

from __future__ import annotations

# Calls grpc has accepted but the server has not yet taken up. Past grpc's default (1,000) it
# drops new calls at random with CANCELLED, and a burst of 1,500 WatchUser calls would see that
# instead of the guard's RESOURCE_EXHAUSTED. A waiting call holds what flow control lets its
# client send before anyone reads: one HTTP/2 window (64 KiB; see bdp_probe below).
MAX_PENDING_CALLS = 4000


def server_options(
    *,
    max_message_bytes: int,
    max_streams_per_connection: int,
    keepalive_seconds: float,
    keepalive_timeout_seconds: float,
) -> list[tuple[str, int]]:
    """Channel arguments for `grpc.aio.server`: message limits, streams per connection, and
    keepalive, so that a vanished peer's connection (and its WatchUser streams) is reaped
    within `keepalive_seconds + keepalive_timeout_seconds`."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_concurrent_streams", max_streams_per_connection),
        ("grpc.keepalive_time_ms", int(keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive_timeout_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        # By default the server stops pinging after two pings without data: an idle stream
        # whose peer vanished later would never be noticed.
        ("grpc.http2.max_pings_without_data", 0),
        # Clients may keep alive every 10 s (grpc's floor is 5 min; pinging more often than
        # the floor gets a connection closed with "too many pings").
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        # HTTP/2 windows stay small unless a read is waiting (grpc then opens the window to
        # the message's size): with grpc's bandwidth-delay probe a stream nobody reads yet
        # could bring in megabytes. Measured on accounts: 64 concurrent GetUser of 30 MiB
        # peaked at 448 MiB RSS with the probe, 224 without; a 19.5 MiB upload over a 50 ms
        # round trip took 1.1 s instead of 0.14 s.
        ("grpc.http2.bdp_probe", 0),
        ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
        ("grpc.server.max_pending_requests_hard_limit", 2 * MAX_PENDING_CALLS),
    ]
