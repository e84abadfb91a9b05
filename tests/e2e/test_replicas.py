"""Several replicas of both services on a 3-node NATS cluster whose streams have 3 replicas.

The module runs its own cluster, database and processes: two accounts replicas on 127.0.0.1
and 127.0.0.2 (same port, the way pods sit behind a headless Service), found through a DNS
server of the test's own whose answers the tests change, and two imaging replicas started at
the same moment. Clients (the test's and imaging's channel to accounts) name the replicas by
DNS and balance round robin, as they would in Kubernetes.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import nats
import pytest
from accounts.v1 import accounts_pb2, accounts_pb2_grpc
from dnslib import QTYPE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSRecord, DNSServer

from devstack.nats import NatsCluster
from devstack.net import free_port, free_ports, wait_until
from devstack.postgres import Postgres
from grpc_guard.options import CLIENT_OPTIONS
from tests.e2e.conftest import Service
from tests.e2e.support import (
    READY,
    beside,
    create_user,
    image_bytes,
    log_records,
    matching,
    wait_settled,
)

NAME = "accounts.test"
AGE_SECONDS, GRACE_SECONDS = 10.0, 2.0  # the accounts replicas' max_connection_age (+ grace)
SMALL = "photo_chelsea.png"


class Names(BaseResolver):  # type: ignore[misc]
    """A DNS server's answers: A records for `NAME`, changed by the tests as pods come and go."""

    def __init__(self) -> None:
        self.addresses: list[str] = []
        self._lock = threading.Lock()

    def set(self, addresses: list[str]) -> None:
        with self._lock:
            self.addresses = list(addresses)

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        reply = request.reply()
        question = request.q
        if str(question.qname).rstrip(".") == NAME and question.qtype == QTYPE.A:
            with self._lock:
                for address in self.addresses:
                    reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(address), ttl=1))
        return reply


@dataclass
class Replicas:
    cluster: NatsCluster
    names: Names
    dns_port: int
    port: int  # every accounts replica's
    env: dict[str, str]
    accounts: list[Service]
    imaging: list[Service]
    logs: Path

    @property
    def target(self) -> str:
        """The accounts replicas by name, through the test's DNS server."""
        return f"dns://127.0.0.1:{self.dns_port}/{NAME}:{self.port}"

    def accounts_replica(self, host: str) -> Service:
        env = self.env | {"ACCOUNTS_HOST": host}
        log = self.logs / f"accounts-{host}.log"
        return Service(f"accounts@{host}", "accounts_service", self.port, env, log, host=host)


@pytest.fixture(scope="module")
def replicas(
    service_env: dict[str, str], pg: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    root = tmp_path_factory.mktemp("replicas")
    names = Names()
    dns_port = free_port()
    dns = DNSServer(names, port=dns_port, address="127.0.0.1", logger=DNSLogger(logf=_quiet))
    dns.start_thread()
    cluster = NatsCluster(root / "nats")
    cluster.start()
    database = f"avatars_replicas_{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = service_env | {
        "DATABASE_URL": pg.create_database(database),
        "NATS_URL": cluster.url,
        "STREAM_REPLICAS": "3",
        "ACCOUNTS_PORT": str(port),
        "ACCOUNTS_ADDR": f"dns://127.0.0.1:{dns_port}/{NAME}:{port}",
        "MAX_CONNECTION_AGE_SECONDS": str(AGE_SECONDS),
        "MAX_CONNECTION_AGE_GRACE_SECONDS": str(GRACE_SECONDS),
        "RENDER_PROCESSES": "1",
    }
    r = Replicas(cluster, names, dns_port, port, env, [], [], root)
    try:
        # Both workers at the same moment: each ensures the streams and the consumer.
        imaging_ports = free_ports(2)
        r.imaging = [
            Service(f"imaging-{i}", "imaging_service", imaging_port,
                    env | {"IMAGING_PORT": str(imaging_port)}, root / f"imaging-{i}.log")
            for i, imaging_port in enumerate(imaging_ports)
        ]  # fmt: skip
        for service in r.imaging:
            service.process.start()
        for service in r.imaging:
            service.wait_serving()
        r.accounts = [r.accounts_replica(host) for host in ("127.0.0.1", "127.0.0.2")]
        for service in r.accounts:
            service.start()
        names.set(["127.0.0.1", "127.0.0.2"])
        yield r
    finally:
        for service in r.accounts + r.imaging:
            service.process.terminate(30)
        cluster.stop()
        dns.stop()
        pg.drop_database(database)


def _quiet(_line: str) -> None:
    """dnslib's logger would print every query."""


@pytest.fixture(scope="module")
def balanced(replicas: Replicas) -> Iterator[accounts_pb2_grpc.AccountsServiceStub]:
    """A client of both accounts replicas, balancing the way the README tells client authors."""
    with grpc.insecure_channel(replicas.target, options=CLIENT_OPTIONS) as channel:
        yield accounts_pb2_grpc.AccountsServiceStub(channel)


@pytest.fixture(scope="module")
def direct(replicas: Replicas) -> Iterator[list[accounts_pb2_grpc.AccountsServiceStub]]:
    """One client per accounts replica, in the fixture's order."""
    channels = [grpc.insecure_channel(service.addr) for service in replicas.accounts]
    yield [accounts_pb2_grpc.AccountsServiceStub(channel) for channel in channels]
    for channel in channels:
        channel.close()


def served(service: Service, msg: str, user_ids: set[str]) -> int:
    """How many of `user_ids` have a `msg` log line in `service`'s log."""
    records = matching(log_records(service.process.log_text()), msg=msg)
    return sum(1 for record in records if record.get("user_id") in user_ids)


def test_two_workers_starting_together_create_the_streams_and_consumer_once(
    replicas: Replicas,
) -> None:
    async def state() -> tuple[list[str], list[str], list[int | None]]:
        nc = await nats.connect(replicas.cluster.url.split(","))
        try:
            js = nc.jetstream()
            streams = sorted(info.config.name or "" for info in await js.streams_info())
            consumers = [info.name for info in await js.consumers_info("ACCOUNTS")]
            infos = [await js.stream_info(name) for name in streams]
            return streams, consumers, [info.config.num_replicas for info in infos]
        finally:
            await nc.close()

    streams, consumers, stream_replicas = asyncio.run(state())
    assert streams == ["ACCOUNTS", "ACCOUNTS_DLQ"]
    assert consumers == ["imaging"]
    assert stream_replicas == [3, 3]
    for service in replicas.imaging:
        records = log_records(service.process.log_text())
        troubles = [r for r in records if r.get("level") in {"WARNING", "ERROR", "CRITICAL"}]
        assert troubles == [], f"{service.name} logged trouble at start-up: {troubles[:3]}"


def test_two_replicas_of_each_service_split_the_work(
    replicas: Replicas, balanced: accounts_pb2_grpc.AccountsServiceStub
) -> None:
    image = image_bytes(SMALL)
    users: list[str] = []
    threads = [
        threading.Thread(target=lambda: users.append(create_user(balanced, image).id))
        for _ in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(users) == 16
    for user_id in users:
        assert wait_settled(balanced, user_id).thumbnail_status == READY
    ids = set(users)
    created = [served(service, "user created", ids) for service in replicas.accounts]
    rendered = [served(service, "job finished", ids) for service in replicas.imaging]
    assert sum(created) == 16 and all(created), f"CreateUser calls per accounts replica: {created}"
    assert sum(rendered) >= 16 and all(rendered), f"renders per imaging replica: {rendered}"


def test_a_watcher_on_one_replica_sees_a_change_made_through_another(
    direct: list[accounts_pb2_grpc.AccountsServiceStub],
) -> None:
    first, second = direct
    user = create_user(first, image_bytes(SMALL))
    assert wait_settled(first, user.id).thumbnail_status == READY
    stream = first.WatchUser(accounts_pb2.WatchUserRequest(id=user.id), timeout=60)
    try:
        assert next(stream).avatar.generation == 1
        second.UpdateAvatar(
            accounts_pb2.UpdateAvatarRequest(id=user.id, avatar_image=image_bytes(SMALL)),
            timeout=30,
        )
        seen = next(stream)  # the change made through the other replica
        assert seen.avatar.generation == 2
        while seen.thumbnail_status != READY:
            seen = next(stream)
        assert seen.avatar.generation == 2
    finally:
        stream.cancel()


def test_users_are_created_and_delivered_while_any_one_nats_node_is_down(
    replicas: Replicas, balanced: accounts_pb2_grpc.AccountsServiceStub
) -> None:
    cluster = replicas.cluster
    leader = cluster.stream_leader("ACCOUNTS")
    assert leader is not None
    # The stream's leader first: its loss forces an election.
    order = [cluster.node(leader)] + [node for node in cluster.nodes if node.name != leader]
    image = image_bytes(SMALL)
    for node in order:
        node.kill()
        try:
            user = create_user(balanced, image)
            settled = wait_settled(balanced, user.id, timeout=60)
            assert settled.thumbnail_status == READY, f"with {node.name} down"
        finally:
            node.start()
        wait_until(lambda: cluster.stream_leader("ACCOUNTS") is not None, 30, "a stream leader")


def test_a_new_accounts_replica_gets_callbacks_within_the_connection_age(
    replicas: Replicas, direct: list[accounts_pb2_grpc.AccountsServiceStub]
) -> None:
    """The workers' channels know two accounts replicas; a third starts and is added to DNS
    (a pod turning ready behind the headless Service). The servers close every connection
    after AGE_SECONDS (+-10%) + GRACE_SECONDS, and the channels, resolving again, must then
    send the new replica its share of UpdateThumbnails calls."""
    image = image_bytes(SMALL)

    # Each worker's channel connects at its first callback: make sure each has one, resolved
    # while DNS named two replicas, or the new one would be found without any re-resolution.
    def each_worker_called_back() -> bool:
        user = create_user(direct[0], image)
        wait_settled(direct[0], user.id)
        return all(
            matching(log_records(worker.process.log_text()), msg="job finished")
            for worker in replicas.imaging
        )

    wait_until(each_worker_called_back, 60, "a callback from each worker")
    new = replicas.accounts_replica("127.0.0.3")
    new.start()
    created: set[str] = set()

    def keep_creating(stop: threading.Event) -> None:
        while not stop.wait(0.25):  # a steady trickle of work, not synchronisation
            created.add(create_user(direct[0], image).id)

    try:
        replicas.names.set(["127.0.0.1", "127.0.0.2", "127.0.0.3"])
        added = time.monotonic()
        within = AGE_SECONDS * 1.1 + GRACE_SECONDS + 3.0  # + a render and its callback
        with beside(keep_creating):
            wait_until(
                lambda: any(r.get("msg") == "thumbnails recorded"
                            for r in log_records(new.process.log_text())),
                within, "a callback on the new replica",
            )  # fmt: skip
        took = time.monotonic() - added
        assert took <= within
        assert created, "no user was created meanwhile"
    finally:
        replicas.names.set(["127.0.0.1", "127.0.0.2"])
        new.process.terminate(30)
