"""Channel arguments for the services' gRPC servers (message limits, streams per connection,
pending calls, keepalive, connection age) and for their clients (round robin)."""

from __future__ import annotations

# Calls grpc has accepted but the server has not yet taken up. Past grpc's default (1,000) it
# drops new calls at random with CANCELLED, and a burst of 1,500 WatchUser calls would see that
# instead of the guard's RESOURCE_EXHAUSTED. A waiting call holds what flow control lets its
# client send before anyone reads: one HTTP/2 window (64 KiB; see bdp_probe below).
MAX_PENDING_CALLS = 4000

# For clients of the services: spread calls over every address the target resolves to (a
# headless Service's pods, a DNS name with several records, "ipv4:host:port,host:port")
# instead of grpc's default, pick_first, which sends everything to one replica. The server's
# max_connection_age makes clients resolve again, so new replicas get their share.
# A connection closed by the server's max_connection_age asks the resolver again, but grpc
# resolves a DNS name at most every 30 s by default; 10 s lets a replica started meanwhile get
# calls within the age (+ grace) even when the age is short.
CLIENT_OPTIONS: list[tuple[str, str | int]] = [
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.dns_min_time_between_resolutions_ms", 10_000),
]


def server_options(
    *,
    max_message_bytes: int,
    max_streams_per_connection: int,
    keepalive_seconds: float,
    keepalive_timeout_seconds: float,
    max_connection_age_seconds: float = 300.0,
    max_connection_age_grace_seconds: float = 30.0,
) -> list[tuple[str, int]]:
    """Channel arguments for `grpc.aio.server`: message limits, streams per connection, and
    keepalive, so that a vanished peer's connection (and its WatchUser streams) is reaped
    within `keepalive_seconds + keepalive_timeout_seconds`.

    Every connection is also closed after `max_connection_age_seconds` (jittered by grpc,
    +-10%): the server sends GOAWAY, calls in flight get `max_connection_age_grace_seconds` to
    finish, then the rest (long WatchUser streams) end with UNAVAILABLE and their clients
    must watch again. Clients reconnect through their resolver, so a replica started since a
    client connected gets its share within age + grace."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_concurrent_streams", max_streams_per_connection),
        ("grpc.keepalive_time_ms", int(keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive_timeout_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.max_connection_age_ms", int(max_connection_age_seconds * 1000)),
        ("grpc.max_connection_age_grace_ms", int(max_connection_age_grace_seconds * 1000)),
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
