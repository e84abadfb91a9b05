"""Session fixtures on real NATS, SeaweedFS S3 and PostgreSQL servers: start or fail, never skip."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.nats import NatsServer
from devstack.postgres import Postgres
from devstack.s3 import S3Server

# Empty TEST_PG_ADMIN_DSN: always start a private cluster.
DEFAULT_PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _uuid8() -> str:
    return uuid.uuid4().hex[:8]


def _running_nats(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[NatsServer]:
    root = tmp_path_factory.mktemp(name)
    server = NatsServer(root / "store", log_path=root / "nats.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    yield from _running_nats(tmp_path_factory, "nats")


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A NATS of the test module's own, so stopping it disturbs no other module."""
    yield from _running_nats(tmp_path_factory, "own-nats")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    root = tmp_path_factory.mktemp("s3")
    server = S3Server(root / "data", log_path=root / "s3.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_bucket(s3_server: S3Server) -> str:
    name = f"avatars-{_uuid8()}"
    s3_server.ensure_bucket(name)
    return name


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """The server at TEST_PG_ADMIN_DSN (default 127.0.0.1:5432) if it answers, else our own."""
    reuse_dsn = os.environ.get("TEST_PG_ADMIN_DSN", DEFAULT_PG_ADMIN_DSN) or None
    # Not under tmp_path_factory: pytest's base dir is root-only (0700), and the private
    # cluster runs as the postgres user.
    data_dir = Path(tempfile.gettempdir()) / f"devstack-pg-{_uuid8()}"
    log_path = tmp_path_factory.mktemp("pg") / "postgres.log"
    server = Postgres(data_dir, reuse_dsn=reuse_dsn, log_path=log_path)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(pg: Postgres) -> Iterator[str]:
    """A database made for this test run, dropped at its end."""
    name = f"avatars_test_{_uuid8()}"
    url = pg.create_database(name)
    yield url
    pg.drop_database(name)
