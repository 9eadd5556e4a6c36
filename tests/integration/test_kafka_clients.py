"""Unmodified Kafka clients (kafka-python, aiokafka, confluent-kafka) against the Kafka
listener of a 3-broker Raftka cluster: produce, group consumption with commits, shared offsets
with the gRPC side, failover, and what malformed input does to the listener."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from raftka import Admin, Consumer, Producer
from raftka.client.consumer import TopicPartition
from tests.harness import LocalCluster, wait_for

pytestmark = pytest.mark.integration
SETTINGS = {
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.num.partitions": "3",
    "group.initial.rebalance.delay.ms": "300",
}


@pytest.fixture
def cluster(cluster_factory) -> LocalCluster:
    cluster = cluster_factory(3, SETTINGS)
    cluster.start()
    cluster.wait_ready()
    return cluster


def read_all_grpc(cluster: LocalCluster, topic: str, partitions: int, count: int) -> list:
    consumer = Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest")
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    records: list = []
    deadline = time.monotonic() + 30
    while len(records) < count and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    consumer.close()
    return records


def test_kafka_python_produce_group_consume_and_shared_offsets(cluster):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=cluster.kafka_bootstrap)
    admin.create_topics([NewTopic("kp-orders", num_partitions=3, replication_factor=3)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=cluster.kafka_bootstrap, acks="all")
    for i in range(60):
        producer.send("kp-orders", f"order-{i}".encode(), key=f"customer-{i % 7}".encode())
    producer.flush()
    producer.close()
    consumer = KafkaConsumer("kp-orders", bootstrap_servers=cluster.kafka_bootstrap,
                             group_id="kp-billing", auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=15000)
    values = []
    for record in consumer:
        values.append(record.value.decode())
        if len(values) == 60:
            break
    consumer.commit()
    consumer.close()
    assert sorted(values) == sorted(f"order-{i}" for i in range(60))
    # the records were stored as Kafka sent them: the gRPC side reads the same keys/values
    grpc_records = read_all_grpc(cluster, "kp-orders", 3, 60)
    assert sorted(r.value.decode() for r in grpc_records) == sorted(values)
    with Admin(cluster.bootstrap) as raftka_admin:
        offsets = raftka_admin.groups.describe_group("kp-billing").offsets
    assert sum(o.offset for o in offsets) == 60


def test_aiokafka_idempotent_producer_and_group_consumer_with_commits(cluster):
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin import NewTopic as AioNewTopic
    from aiokafka.structs import TopicPartition as AioTopicPartition

    async def scenario() -> tuple[list[str], dict[int, int]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=cluster.kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([AioNewTopic("aio-events", 3, 3)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=cluster.kafka_bootstrap, acks="all",
                                    enable_idempotence=True)
        await producer.start()
        try:
            for i in range(50):
                await producer.send_and_wait("aio-events", f"e{i}".encode(),
                                             key=f"k{i % 5}".encode())
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer("aio-events", bootstrap_servers=cluster.kafka_bootstrap,
                                    group_id="aio-group", auto_offset_reset="earliest",
                                    enable_auto_commit=False)
        await consumer.start()
        values: list[str] = []
        try:
            while len(values) < 50:
                batches = await asyncio.wait_for(consumer.getmany(timeout_ms=500), 20)
                values.extend(r.value.decode() for rs in batches.values() for r in rs)
            await consumer.commit()
            partitions = consumer.assignment()
            committed = {tp.partition: await consumer.committed(tp) for tp in partitions}
        finally:
            await consumer.stop()
        assert {tp.partition for tp in partitions} == {0, 1, 2}
        assert AioTopicPartition("aio-events", 0) in partitions
        return values, committed

    values, committed = asyncio.run(scenario())
    assert sorted(values) == sorted(f"e{i}" for i in range(50))
    assert sum(committed.values()) == 50
    with Admin(cluster.bootstrap) as raftka_admin:
        offsets = raftka_admin.groups.describe_group("aio-group").offsets
    assert {o.partition: o.offset for o in offsets} == committed


def test_confluent_kafka_idempotent_producer_and_two_member_group(cluster):
    from confluent_kafka import Consumer as KafkaConsumer
    from confluent_kafka import Producer as KafkaProducer

    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("ck-events", num_partitions=4)
    producer = KafkaProducer({"bootstrap.servers": cluster.kafka_bootstrap, "acks": "all",
                              "enable.idempotence": True})
    errors: list = []
    for i in range(200):
        producer.produce("ck-events", value=str(i).encode(), key=str(i).encode(),
                         on_delivery=lambda err, msg: errors.append(err) if err else None)
    assert producer.flush(30) == 0 and not errors
    seen: dict[int, set[int]] = {}
    lock = threading.Lock()

    def member(index: int) -> None:
        consumer = KafkaConsumer({"bootstrap.servers": cluster.kafka_bootstrap,
                                  "group.id": "ck-group", "auto.offset.reset": "earliest",
                                  "enable.auto.commit": True, "auto.commit.interval.ms": 500})
        consumer.subscribe(["ck-events"])
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                with lock:
                    if sum(len(v) for v in seen.values()) >= 200:
                        break
                continue
            with lock:
                seen.setdefault(message.partition(), set()).add(index)
                seen.setdefault(-1, set()).add(int(message.value()))
        consumer.close()

    threads = [threading.Thread(target=member, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(40)
    assert seen[-1] >= set(range(200))
    owners = {p: members for p, members in seen.items() if p >= 0}
    assert len(owners) == 4
    with Admin(cluster.bootstrap) as admin:
        description = admin.groups.describe_group("ck-group")
    assert sum(o.offset for o in description.offsets) == 200


def test_grpc_records_are_read_over_kafka(cluster):
    from confluent_kafka import Consumer as KafkaConsumer

    with Producer(cluster.bootstrap, acks="all") as producer:
        for i in range(30):
            producer.send("from-grpc", f"g{i}".encode(), key=b"k", headers=[("h", b"1")])
        producer.flush()
    consumer = KafkaConsumer({"bootstrap.servers": cluster.kafka_bootstrap,
                              "group.id": "reader", "auto.offset.reset": "earliest"})
    consumer.subscribe(["from-grpc"])
    values = []
    deadline = time.monotonic() + 20
    while len(values) < 30 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            values.append(message.value().decode())
            assert message.key() == b"k" and message.headers() == [("h", b"1")]
    consumer.close()
    assert values == [f"g{i}" for i in range(30)]


def test_large_fetches_sent_from_the_segment_files_arrive_intact(cluster):
    """Fetches of 32 KiB and more go out by sendfile, spliced into kio's encoding (Fetch v11
    for kafka-python, v12 for librdkafka): both clients must get every byte back."""
    from confluent_kafka import Consumer as KafkaConsumer
    from confluent_kafka import TopicPartition as KafkaTopicPartition
    from kafka import KafkaConsumer as PythonKafkaConsumer
    from kafka import TopicPartition as PythonTopicPartition

    expected = [(str(i).encode(), bytes([i % 251]) * (500 + 37 * (i % 90))) for i in range(1200)]
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("big-fetch", num_partitions=2)
    with Producer(cluster.bootstrap, acks="all", linger_ms=20) as producer:
        for i, (key, value) in enumerate(expected):
            producer.send("big-fetch", value, key=key, partition=i % 2)
        producer.flush()
    by_partition = {p: [kv for i, kv in enumerate(expected) if i % 2 == p] for p in (0, 1)}

    consumer = KafkaConsumer({"bootstrap.servers": cluster.kafka_bootstrap, "group.id": "big",
                              "enable.auto.commit": False})
    consumer.assign([KafkaTopicPartition("big-fetch", p, 0) for p in (0, 1)])
    got: dict[int, list] = {0: [], 1: []}
    deadline = time.monotonic() + 30
    while sum(map(len, got.values())) < len(expected) and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            got[message.partition()].append((message.key(), message.value()))
    consumer.close()
    assert got == by_partition

    old = PythonKafkaConsumer(bootstrap_servers=cluster.kafka_bootstrap,
                              enable_auto_commit=False, consumer_timeout_ms=10_000)
    old.assign([PythonTopicPartition("big-fetch", p) for p in (0, 1)])
    old.seek_to_beginning()
    got = {0: [], 1: []}
    for message in old:
        got[message.partition].append((message.key, message.value))
        if sum(map(len, got.values())) == len(expected):
            break
    old.close()
    assert got == by_partition


def test_confluent_kafka_producer_carries_on_through_a_leader_kill(cluster):
    from confluent_kafka import Producer as KafkaProducer

    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("ck-failover", num_partitions=1)
        leader = admin.describe_topic("ck-failover").partitions[0].leader_id
    producer = KafkaProducer({"bootstrap.servers": cluster.kafka_bootstrap, "acks": "all",
                              "enable.idempotence": True, "message.timeout.ms": 60000,
                              "topic.metadata.refresh.interval.ms": 1000})
    acked: list[int] = []
    failed: list = []

    def report(err, message) -> None:
        if err:
            failed.append(err)
        else:
            acked.append(int(message.value()))

    for i in range(1500):
        producer.produce("ck-failover", value=str(i).encode(), partition=0,
                         on_delivery=report)
        producer.poll(0)
        if i == 500:
            producer.flush(30)
            cluster.brokers[leader].kill()
        if i % 100 == 0:
            time.sleep(0.02)
    assert producer.flush(90) == 0
    assert not failed, failed[:3]
    records = read_all_grpc(cluster, "ck-failover", 1, 1500)
    values = [int(r.value) for r in records]
    assert values == sorted(values) and len(values) == len(set(values)) == 1500
    assert set(acked) == set(range(1500))


def test_malformed_frames_close_the_connection_and_the_broker_carries_on(cluster):
    host, port = "127.0.0.1", cluster.brokers[1].kafka_port

    def exchange(payload: bytes) -> bytes:
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(payload)
            chunks = []
            try:
                while True:
                    data = sock.recv(65536)
                    if not data:
                        break
                    chunks.append(data)
                    if len(b"".join(chunks)) >= 4 and len(b"".join(chunks)) >= 4 + \
                            struct.unpack(">i", b"".join(chunks)[:4])[0]:
                        break
            except TimeoutError:
                pass
            return b"".join(chunks)

    assert exchange(struct.pack(">i", 2**30)) == b""  # absurd size: closed
    assert exchange(struct.pack(">i", 12) + b"\x00\x63\x00\x01" + b"\x00" * 8) == b""
    assert exchange(struct.pack(">i", 10) + b"\x00\x03\x00\x05garbage!") == b""
    # ApiVersions at a version the broker does not know: answered at v0 with the error
    request = struct.pack(">hhi", 18, 99, 7) + struct.pack(">h", -1)
    reply = exchange(struct.pack(">i", len(request)) + request)
    size, correlation, error = struct.unpack(">iih", reply[:10])
    assert (correlation, error) == (7, 35) and size == len(reply) - 4
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=f"{host}:{port}")
    producer.send("still-fine", b"x").get(timeout=20)
    producer.close()


@pytest.mark.slow
def test_kafka_python_2_0_2(cluster, tmp_path: Path):
    venv = tmp_path / "kp202"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "-q",
                                "kafka-python==2.0.2"], capture_output=True, text=True,
                               timeout=300)
    if installed.returncode != 0:
        pytest.skip(f"kafka-python 2.0.2 could not be installed: {installed.stderr[-300:]}")
    script = """
import sys
from kafka import KafkaConsumer, KafkaProducer
bootstrap = sys.argv[1]
producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
for i in range(20):
    producer.send("old-client", str(i).encode())
producer.flush()
consumer = KafkaConsumer("old-client", bootstrap_servers=bootstrap, group_id="old",
                         auto_offset_reset="earliest", consumer_timeout_ms=15000)
values = sorted(int(r.value) for r, _ in zip(consumer, range(20)))
consumer.commit()
print(values == list(range(20)), len(values))
"""
    result = subprocess.run([str(venv / "bin" / "python"), "-c", script,
                             cluster.kafka_bootstrap], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", "20"]
    wait_for(lambda: sum(o.offset for o in Admin(cluster.bootstrap).groups.describe_group(
        "old").offsets) == 20, 10, "kafka-python 2.0.2's commit")


def test_kafka_list_groups_names_each_group_once(cluster):
    """Kafka clients send ListGroups to every broker and merge the answers; each broker must
    answer only for the groups it coordinates (librdkafka's test 0019 listed each group once
    per broker when every broker answered for the whole cluster)."""
    from confluent_kafka import Consumer as KafkaConsumer
    from confluent_kafka import TopicPartition as KafkaTopicPartition
    from confluent_kafka.admin import AdminClient

    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("listed", num_partitions=1)
    names = [f"listed-group-{i}" for i in range(4)]
    for name in names:  # a committed offset is enough for a group to exist
        consumer = KafkaConsumer({"bootstrap.servers": cluster.kafka_bootstrap, "group.id": name,
                                  "enable.auto.commit": False})
        try:
            consumer.commit(offsets=[KafkaTopicPartition("listed", 0, 0)], asynchronous=False)
        finally:
            consumer.close()
    admin_client = AdminClient({"bootstrap.servers": cluster.kafka_bootstrap})
    listed: list[str] = []

    def all_listed() -> bool:
        result = admin_client.list_consumer_groups(request_timeout=10).result()
        listed[:] = [g.group_id for g in result.valid]
        return set(names) <= set(listed)

    wait_for(all_listed, 30, "every group in ListGroups")
    assert sorted(g for g in listed if g in names) == sorted(names)

    # librdkafka merges what it is told; ask each broker ourselves (ListGroups v0)
    per_broker = [_list_groups_v0(address) for address in cluster.kafka_bootstrap.split(",")]
    answered = [g for groups in per_broker for g in groups if g in names]
    assert sorted(answered) == sorted(names), per_broker  # each by its coordinator only


def _list_groups_v0(address: str) -> list[str]:
    host, port = address.rsplit(":", 1)
    client_id = b"list-groups-test"
    header = struct.pack(">hhih", 16, 0, 7, len(client_id)) + client_id
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(header)) + header)
        size = struct.unpack(">i", _read_exactly(sock, 4))[0]
        body = _read_exactly(sock, size)
    correlation, error, count = struct.unpack_from(">ihi", body, 0)
    assert correlation == 7 and error == 0
    position, groups = 10, []
    for _ in range(count):
        (length,) = struct.unpack_from(">h", body, position)
        groups.append(body[position + 2:position + 2 + length].decode())
        position += 2 + length
        (length,) = struct.unpack_from(">h", body, position)
        position += 2 + length
    return groups


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data
