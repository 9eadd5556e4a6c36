"""File descriptors as a budget, on real brokers with a low RLIMIT_NOFILE (max.open.files).

Three brokers with a limit of 600 descriptors, 300 of them reserved: each can host 300
replicas. 250 partitions (RF=3, three files per segment: 750 segment files per broker, far
more than the 300 the pool holds) are created, written, read back and survive a broker's
crash and restart, with no "Too many open files" anywhere and never more than the limit
open. A create that would put more replicas on a broker than it can host is refused before
anything is committed, with the reason, over gRPC, the Kafka API and the CLI.
(Before: 10,000 replicas per broker on a limit of 20,000 took every descriptor, and the Raft
journal, checkpoints and produce requests failed with EMFILE.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from raftka.proto.raftka.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    broker_pb2,
    broker_pb2_grpc,
    common_pb2,
)
from tests.harness import LocalCluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
Code = common_pb2.ErrorCode
LIMIT = 600
RESERVE = 300
PARTITIONS = 250
SETTINGS = {
    "max.open.files": str(LIMIT),
    "fd.reserve": str(RESERVE),
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.num.partitions": "3",
    # Small segments and a dense index: many files per partition, indexes written often.
    "log.segment.bytes": "2048",
    # This machine is shared: a 250-partition create may take a while to commit.
    "metadata.write.timeout.ms": "30000",
}
REPO = Path(__file__).resolve().parents[2]


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def create(cluster: LocalCluster, name: str, partitions: int) -> admin_pb2.CreateTopicResult:
    with grpc.insecure_channel(cluster.brokers[1].address) as channel:
        reply = admin_pb2_grpc.AdminServiceStub(channel).CreateTopics(
            admin_pb2.CreateTopicsRequest(topics=[admin_pb2.NewTopic(
                name=name, num_partitions=partitions, replication_factor=3)]),
            timeout=60,
        )
    return reply.topics[0]


def isr_full(cluster: LocalCluster, topic: str) -> bool:
    with grpc.insecure_channel(cluster.brokers[1].address) as channel:
        reply = broker_pb2_grpc.BrokerServiceStub(channel).Metadata(
            broker_pb2.MetadataRequest(topics=[topic]), timeout=10)
    parts = reply.topics[0].partitions if reply.topics else []
    return len(parts) == PARTITIONS and all(
        p.leader_id > 0 and len(p.isr) == 3 for p in parts)


def produce_everywhere(cluster: LocalCluster, topic: str, rounds: range) -> None:
    producer = Producer({"bootstrap.servers": cluster.kafka_bootstrap, "acks": "all",
                         "linger.ms": 10, "message.timeout.ms": 60_000})
    failures: list[object] = []
    for round_ in rounds:
        for partition in range(PARTITIONS):
            producer.produce(topic, f"{partition}:{round_}:".encode() + b"x" * 200,
                             partition=partition,
                             on_delivery=lambda err, _msg: err and failures.append(err))
        producer.poll(0)
    assert producer.flush(90) == 0
    assert failures == []


def read_everything(cluster: LocalCluster, topic: str, expected: int) -> set[bytes]:
    consumer = Consumer({"bootstrap.servers": cluster.kafka_bootstrap, "group.id": "fd-check",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    seen: set[bytes] = set()
    try:
        def done() -> bool:
            for message in consumer.consume(1000, timeout=1):
                if message.error() is None:
                    seen.add(message.value()[:12].split(b":x")[0])
            return len(seen) >= expected
        try:
            wait_for(done, 90, f"{expected} records read back from {topic}")
        except TimeoutError:
            rounds = expected // PARTITIONS
            missing = sorted({f"{p}:{r}".encode() for p in range(PARTITIONS)
                              for r in range(rounds)} - seen)
            raise AssertionError(f"{len(missing)} records not read: {missing[:20]}") from None
    finally:
        consumer.close()
    return seen


def assert_no_emfile(cluster: LocalCluster) -> None:
    for broker in cluster.brokers.values():
        assert "Too many open files" not in broker.log_text(), broker.broker_id


def test_many_partitions_served_within_a_small_descriptor_limit(cluster_factory):
    cluster = cluster_factory(3, SETTINGS)
    cluster.start()
    cluster.wait_ready()
    for broker in cluster.brokers.values():
        limits = Path(f"/proc/{broker.pid}/limits").read_text()
        assert any(line.startswith("Max open files") and f" {LIMIT} " in line
                   for line in limits.splitlines()), limits
    created = create(cluster, "wide", PARTITIONS)
    assert created.error_code == Code.NONE, created.error_message
    wait_for(lambda: isr_full(cluster, "wide"), 60, "every ISR of 'wide' full")

    produce_everywhere(cluster, "wide", range(12))
    for broker in cluster.brokers.values():
        assert open_fds(broker.pid) <= LIMIT
        segment_files = sum(len(files) for _, _, files in os.walk(broker.data_dir / "logs"))
        assert segment_files > 3 * (LIMIT - RESERVE)  # far more files than the pool holds
    assert len(read_everything(cluster, "wide", PARTITIONS * 12)) == PARTITIONS * 12

    # A crash and restart: recovery opens every partition's segments through the pool.
    cluster.brokers[2].kill()
    cluster.brokers[2].start()
    cluster.wait_ready(timeout_s=90)
    wait_for(lambda: isr_full(cluster, "wide"), 90, "every ISR of 'wide' full again")
    produce_everywhere(cluster, "wide", range(12, 13))
    assert len(read_everything(cluster, "wide", PARTITIONS * 13)) == PARTITIONS * 13
    assert_no_emfile(cluster)


def test_a_create_past_the_budget_is_refused_with_the_reason(cluster_factory):
    cluster = cluster_factory(3, SETTINGS)
    cluster.start()
    cluster.wait_ready()
    assert create(cluster, "first", PARTITIONS).error_code == Code.NONE

    refused = create(cluster, "too-many", 100)
    assert refused.error_code == Code.POLICY_VIOLATION
    assert f"can host {LIMIT - RESERVE}" in refused.error_message
    assert "file-descriptor budget" in refused.error_message

    admin = AdminClient({"bootstrap.servers": cluster.kafka_bootstrap})
    future = admin.create_topics([NewTopic("too-many-kafka", 100, 3)])["too-many-kafka"]
    with pytest.raises(KafkaException) as raised:
        future.result(30)
    error = raised.value.args[0]
    assert error.code() == 44  # POLICY_VIOLATION
    assert "file-descriptor budget" in error.str()

    cli = subprocess.run(
        [sys.executable, "-m", "raftka", "topics", "create", "too-many-cli", "--partitions",
         "100", "--replication-factor", "3", "--bootstrap", cluster.bootstrap],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert cli.returncode != 0
    assert "file-descriptor budget" in cli.stdout + cli.stderr

    # Nothing of the refused topics was committed; what fits still does.
    with grpc.insecure_channel(cluster.brokers[1].address) as channel:
        names = {t.name for t in admin_pb2_grpc.AdminServiceStub(channel).ListTopics(
            admin_pb2.ListTopicsRequest(), timeout=10).topics}
    assert not names & {"too-many", "too-many-kafka", "too-many-cli"}
    assert create(cluster, "small", 10).error_code == Code.NONE
    assert_no_emfile(cluster)
