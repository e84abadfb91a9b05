"""The accounts service rides out a PostgreSQL restart without being restarted itself."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from accounts.v1 import accounts_pb2, accounts_pb2_grpc

from devstack.net import free_port, wait_until
from devstack.postgres import Postgres
from tests.e2e.conftest import Service
from tests.e2e.support import PENDING, image_bytes, unique_email


@pytest.fixture
def private_pg(tmp_path: Path) -> Iterator[Postgres]:
    """A cluster of this test's own, so it may be restarted."""
    data = Path(tempfile.gettempdir()) / f"restart-pg-{uuid.uuid4().hex[:8]}"
    server = Postgres(data, log_path=tmp_path / "pg.log")
    server.start()
    yield server
    server.stop()


def test_accounts_reconnects_after_a_postgres_restart(
    pipeline: tuple[Service, Service],  # the worker has created the stream
    service_env: dict[str, str],
    private_pg: Postgres,
    tmp_path: Path,
) -> None:
    port = free_port()
    dsn = private_pg.create_database("restart")
    # No worker reports back for these users (the session's calls the session's accounts), so
    # the reconciler would re-request them once RECONCILE_AFTER_SECONDS passed: on a busy machine
    # that added events to the count below. Reconciling is tested elsewhere.
    env = {
        **service_env,
        "ACCOUNTS_PORT": str(port),
        "DATABASE_URL": dsn,
        "RECONCILE_AFTER_SECONDS": "3600",
    }
    accounts = Service("accounts-pg", "accounts_service", port, env, tmp_path / "accounts.log")
    accounts.start()
    try:
        with grpc.insecure_channel(accounts.addr) as channel:
            stub = accounts_pb2_grpc.AccountsServiceStub(channel)
            before = create(stub)
            private_pg.restart()
            after: list[str] = []

            def created() -> bool:
                try:
                    after.append(create(stub))
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                    return False
                return True

            wait_until(created, 30, "CreateUser working again")
            assert accounts.process.running
        with psycopg.connect(dsn) as conn:
            wait_until(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM outbox WHERE published_at IS NULL"
                    ).fetchone()
                    == (0,)
                ),
                # A publish whose mark was cut off by the restart is retried once its lease
                # (30 s) runs out.
                60,
                "both events relayed",
            )
            published = conn.execute("SELECT count(*) FROM outbox").fetchone()
        assert published == (2,), f"{before}, {after}"
    finally:
        accounts.process.terminate(30)


def create(stub: accounts_pb2_grpc.AccountsServiceStub) -> str:
    user = stub.CreateUser(
        accounts_pb2.CreateUserRequest(
            email=unique_email("pg"), display_name="PG", avatar_image=image_bytes("geom_64x64.png")
        ),
        timeout=10,
    )
    assert user.thumbnail_status == PENDING
    return str(user.id)
