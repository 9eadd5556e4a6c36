"""Named listeners advertised at other addresses, as behind docker compose's port mapping: a
client that comes in through the mapped ports must be told the mapped ports for every broker
(Metadata, FindCoordinator, DescribeCluster), while clients of the internal listener keep the
internal addresses. Kafka listeners with confluent-kafka, extra gRPC listeners with the
Raftka SDK. A small TCP forwarder in the test plays Docker's part."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from raftka import Admin, Consumer, Producer
from tests.harness import LocalCluster, free_port_block

pytestmark = pytest.mark.integration


class PortMapper:
    """Forwards 127.0.0.1:public -> 127.0.0.1:private for several pairs, counting the
    connections each public port took (which proves clients used the advertised ports)."""

    def __init__(self, mapping: dict[int, int]) -> None:
        self.mapping = mapping
        self.connections: Counter[int] = Counter()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._servers: list[asyncio.base_events.Server] = []

    def __enter__(self) -> PortMapper:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        for public, private in self.mapping.items():
            self._servers.append(self._loop.run_until_complete(asyncio.start_server(
                lambda r, w, pub=public, priv=private: self._pipe(r, w, pub, priv),
                "127.0.0.1", public)))
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    public: int, private: int) -> None:
        self.connections[public] += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", private)
        except OSError:
            writer.close()
            return

        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer),
                             return_exceptions=True)


@dataclasses.dataclass
class MappedCluster:
    cluster: LocalCluster
    kafka_public: dict[int, int]  # broker id -> public port of its EXTERNAL Kafka listener
    grpc_public: dict[int, int]   # broker id -> public port of its EXTERNAL gRPC listener
    mapper: PortMapper

    def assert_all_reached(self, public: dict[int, int]) -> None:
        seen = self.mapper.connections
        assert all(seen[port] > 0 for port in public.values()), (
            f"a broker was never reached through its public port: {seen}")


@pytest.fixture
def mapped_cluster(cluster_factory) -> Iterator[MappedCluster]:
    """3 brokers, each with an INTERNAL Kafka listener (the cluster's Kafka port) and an
    EXTERNAL one, and an EXTERNAL gRPC listener besides the main one; the EXTERNAL ones are
    advertised at public ports that only the forwarder opens."""
    cluster = cluster_factory(3, {"default.replication.factor": "3",
                                  "min.insync.replicas": "2",
                                  "offsets.topic.num.partitions": "3",
                                  "group.initial.rebalance.delay.ms": "300"})
    kafka_public: dict[int, int] = {}
    grpc_public: dict[int, int] = {}
    mapping: dict[int, int] = {}
    taken = {b.port + i for b in cluster.brokers.values() for i in range(3)}  # not bound yet
    needed = 4 * len(cluster.brokers)
    while True:
        base = free_port_block(needed)
        block = range(base, base + needed)
        if not taken.intersection(block):
            break
    ports = iter(block)
    for broker_id, broker in cluster.brokers.items():
        kafka_private, kafka_public[broker_id] = next(ports), next(ports)
        grpc_private, grpc_public[broker_id] = next(ports), next(ports)
        mapping[kafka_public[broker_id]] = kafka_private
        mapping[grpc_public[broker_id]] = grpc_private
        broker.settings = {
            **broker.settings,
            "listeners": f"INTERNAL://127.0.0.1:{broker.kafka_port},"
                         f"EXTERNAL://127.0.0.1:{kafka_private}",
            "advertised.listeners": f"EXTERNAL://127.0.0.1:{kafka_public[broker_id]}",
            "grpc.listeners": f"EXTERNAL://127.0.0.1:{grpc_private}",
            "grpc.advertised.listeners": f"EXTERNAL://127.0.0.1:{grpc_public[broker_id]}",
            "listener.security.protocol.map": "INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT",
        }
    with PortMapper(mapping) as mapper:
        cluster.start()
        cluster.wait_ready()
        yield MappedCluster(cluster, kafka_public, grpc_public, mapper)


def test_grpc_clients_are_told_the_addresses_of_the_listener_they_came_in_on(mapped_cluster):
    cluster, public = mapped_cluster.cluster, mapped_cluster.grpc_public
    external = ",".join(f"127.0.0.1:{port}" for port in public.values())
    with Admin(external) as admin:
        seen = {b.endpoint.broker_id: b.endpoint.port
                for b in admin.describe_cluster().brokers}
        admin.create_topic("mapped-grpc", num_partitions=3)  # leaders on all three brokers
    assert seen == public
    with Admin(cluster.bootstrap) as admin:  # the main listener keeps the main addresses
        assert {b.endpoint.broker_id: b.endpoint.port
                for b in admin.describe_cluster().brokers} == {
            i: b.port for i, b in cluster.brokers.items()}
    with Producer(external, acks="all") as producer:
        sent = [producer.send("mapped-grpc", str(i).encode(), key=str(i).encode())
                for i in range(60)]
        producer.flush()
        assert all(future.get(30).offset >= 0 for future in sent)
    consumer = Consumer(bootstrap_servers=external, group_id="mapped-grpc-group",
                        auto_offset_reset="earliest")
    consumer.subscribe(["mapped-grpc"])
    values: set[int] = set()
    deadline = time.monotonic() + 30
    while len(values) < 60 and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            values.update(int(r.value) for r in records)
    consumer.close()
    assert values == set(range(60))
    mapped_cluster.assert_all_reached(public)


def test_clients_are_told_the_addresses_of_the_listener_they_came_in_on(mapped_cluster):
    from confluent_kafka import Consumer as KafkaConsumer
    from confluent_kafka import Producer as KafkaProducer
    from confluent_kafka.admin import AdminClient

    cluster, public = mapped_cluster.cluster, mapped_cluster.kafka_public
    external = ",".join(f"127.0.0.1:{port}" for port in public.values())
    internal = cluster.kafka_bootstrap

    def brokers_seen_via(bootstrap: str) -> dict[int, tuple[str, int]]:
        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
        return {b.id: (b.host, b.port) for b in metadata.brokers.values()}

    assert brokers_seen_via(external) == {i: ("127.0.0.1", p) for i, p in public.items()}
    assert brokers_seen_via(internal) == {
        i: ("127.0.0.1", b.kafka_port) for i, b in cluster.brokers.items()}

    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("mapped", num_partitions=3)  # leaders on all three brokers
    producer = KafkaProducer({"bootstrap.servers": external, "acks": "all"})
    for i in range(60):
        producer.produce("mapped", value=str(i).encode(), key=str(i).encode())
    assert producer.flush(30) == 0
    consumer = KafkaConsumer({"bootstrap.servers": external, "group.id": "mapped-group",
                              "auto.offset.reset": "earliest"})
    consumer.subscribe(["mapped"])
    values: set[int] = set()
    deadline = time.monotonic() + 30
    while len(values) < 60 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            values.add(int(message.value()))
    consumer.commit(asynchronous=False)
    consumer.close()
    assert values == set(range(60))

    admin = AdminClient({"bootstrap.servers": external})  # kept alive until the result
    coordinator = admin.describe_consumer_groups(["mapped-group"])["mapped-group"].result(
        20).coordinator
    assert coordinator.port == public[coordinator.id]  # FindCoordinator names the mapped port
    mapped_cluster.assert_all_reached(public)
