"""The devstack servers really start, restart with their data, and stay apart from each other."""

from __future__ import annotations

import io
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import psycopg
import pytest
from minio import Minio
from minio.error import S3Error

from devstack.nats import NatsCluster, NatsServer
from devstack.net import LOCALHOST, port_open
from devstack.postgres import Postgres
from devstack.s3 import S3Server


def _uuid8() -> str:
    return uuid.uuid4().hex[:8]


def _put(server: S3Server, bucket: str, key: str, data: bytes) -> None:
    server.client().put_object(bucket, key, io.BytesIO(data), len(data))


def _get(server: S3Server, bucket: str, key: str) -> bytes:
    response = server.client().get_object(bucket, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


@pytest.fixture
def own_s3(tmp_path: Path) -> Iterator[S3Server]:
    """An S3 server of this test alone, free to restart."""
    server = S3Server(tmp_path / "s3")
    server.start()
    yield server
    server.stop()


async def test_a_nats_cluster_member_killed_and_started_again_catches_up(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path / "cluster")
    cluster.start()
    try:
        stream = f"DEVSTACK_{_uuid8()}"
        nc = await nats.connect(cluster.url.split(","))
        await nc.jetstream().add_stream(name=stream, subjects=[f"{stream}.>"], num_replicas=3)
        await nc.close()
        leader = cluster.stream_leader(stream)
        assert leader in {node.name for node in cluster.nodes}
        # Publish through the leader, so that the kill does not also cut this client off (a
        # publish in flight on a connection that breaks is lost, and the relay would retry it).
        nc = await nats.connect(cluster.node(leader).url, dont_randomize=True)
        js = nc.jetstream()
        down = next(node for node in cluster.nodes if node.name != leader)
        port = down.port
        down.kill()
        for i in range(5):  # the two others are a majority: the stream goes on
            await js.publish(f"{stream}.n", str(i).encode(), timeout=10)
        down.start()
        await nc.close()
        assert down.port == port and down.healthy()  # healthy: caught up with the stream
        nc = await nats.connect(down.url, connect_timeout=2, dont_randomize=True)
        assert nc.connected_url is not None and nc.connected_url.port == port
        assert (await nc.jetstream().stream_info(stream)).state.messages == 5
        await nc.close()
    finally:
        cluster.stop()
    assert not any(port_open(LOCALHOST, n.port) for n in cluster.nodes)


async def test_nats_restart_keeps_jetstream_messages(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        stream = f"DEVSTACK_{_uuid8()}"
        nc = await nats.connect(server.url)
        await nc.jetstream().add_stream(name=stream, subjects=[f"{stream}.>"])
        ack = await nc.jetstream().publish(f"{stream}.hello", b"still here")
        await nc.close()
        first_pid = server.process.pid

        server.restart()

        nc = await nats.connect(server.url)
        stored = await nc.jetstream().get_msg(stream, ack.seq)
        await nc.close()
        assert server.process.pid != first_pid
        assert stored.data == b"still here"
    finally:
        server.stop()
    assert not port_open(LOCALHOST, server.port)


def test_s3_restart_keeps_objects_and_ports(own_s3: S3Server) -> None:
    bucket = f"keep-{_uuid8()}"
    own_s3.ensure_bucket(bucket)
    _put(own_s3, bucket, "avatar.png", b"\x89PNG bytes")
    endpoint = own_s3.endpoint

    own_s3.restart()

    assert own_s3.endpoint == endpoint
    assert _get(own_s3, bucket, "avatar.png") == b"\x89PNG bytes"
    own_s3.stop()
    again = S3Server(own_s3.data_dir)  # as the next `make run` does
    assert again.ports == own_s3.ports
    again.start()
    try:
        assert _get(again, bucket, "avatar.png") == b"\x89PNG bytes"
    finally:
        again.stop()


def test_two_s3_servers_run_side_by_side(
    s3_server: S3Server, s3_bucket: str, own_s3: S3Server
) -> None:
    own_s3.ensure_bucket(s3_bucket)
    _put(s3_server, s3_bucket, "who", b"session server")
    _put(own_s3, s3_bucket, "who", b"second server")

    assert s3_server.ports.keys() == own_s3.ports.keys()
    assert not set(s3_server.ports.values()) & set(own_s3.ports.values())
    assert _get(s3_server, s3_bucket, "who") == b"session server"
    assert _get(own_s3, s3_bucket, "who") == b"second server"


def test_s3_refuses_wrong_credentials(s3_server: S3Server, s3_bucket: str) -> None:
    impostor = Minio(
        s3_server.endpoint, access_key=s3_server.access_key, secret_key="wrong", secure=False
    )
    with pytest.raises(S3Error):
        impostor.bucket_exists(s3_bucket)


def test_database_url_is_a_fresh_database_of_this_run(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
    assert row is not None
    assert row[0].startswith("avatars_test_")


def test_created_database_is_empty_and_dropped_despite_open_connections(pg: Postgres) -> None:
    name = f"devstack_check_{_uuid8()}"
    dsn = pg.create_database(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()
        assert row == (0,)
        pg.drop_database(name)  # FORCE ends `conn`
    with psycopg.connect(pg.admin_dsn) as admin:
        found = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    assert found is None


def test_private_postgres_cluster_restarts_with_its_data(tmp_path: Path) -> None:
    # In /tmp, not tmp_path: the cluster runs as the postgres user, who cannot enter pytest's dir.
    data_dir = Path(tempfile.gettempdir()) / f"devstack-pg-{_uuid8()}"
    server = Postgres(data_dir, log_path=tmp_path / "postgres.log")
    try:
        server.start()
        assert server.owned
        dsn = server.create_database("kept")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (v text)")
            conn.execute("INSERT INTO t VALUES ('survives')")

        server.restart()

        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT v FROM t").fetchall() == [("survives",)]
        server.stop()
        assert not port_open(LOCALHOST, server.port)
    finally:
        server.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_reused_postgres_is_never_stopped(pg: Postgres, tmp_path: Path) -> None:
    reused = Postgres(tmp_path / "unused", reuse_dsn=pg.admin_dsn)
    reused.start()
    reused.stop()

    assert not reused.owned
    with pytest.raises(RuntimeError):
        reused.restart()
    with psycopg.connect(pg.admin_dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
