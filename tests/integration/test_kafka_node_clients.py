"""Unmodified Node.js Kafka clients (kafkajs, and NestJS's Kafka transport on top of it) against
the Kafka wire-protocol listeners of a real 3-broker cluster (examples/nestjs), checked with
the Python SDK."""

from __future__ import annotations

import time
import uuid

import pytest

from raftka import Admin, Consumer
from raftka.client.consumer import TopicPartition
from tests.harness import LocalCluster
from tests.node_harness import TIMEOUT_S, NodeProcess, json_lines, node_skip_reason, run_node

pytestmark = [pytest.mark.integration, pytest.mark.node]

SETTINGS = {
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.num.partitions": "3",
    "group.initial.rebalance.delay.ms": "300",
}
NODE_SKIP = node_skip_reason()
if NODE_SKIP is not None:
    pytestmark.append(pytest.mark.skip(reason=NODE_SKIP))


@pytest.fixture
def cluster(cluster_factory) -> LocalCluster:
    cluster = cluster_factory(3, SETTINGS)
    cluster.start()
    cluster.wait_ready()
    return cluster


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def read_partition(bootstrap: str, topic: str, partition: int, timeout_s: float = 20) -> list:
    """Every record of one partition, from the log start to its end offset."""
    tp = TopicPartition(topic, partition)
    consumer = Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    try:
        end = consumer.end_offsets([tp])[tp]
        consumer.assign([tp])
        records: list = []
        deadline = time.monotonic() + timeout_s
        while (not records or records[-1].offset < end - 1) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def test_kafkajs_round_trip_through_a_consumer_group(cluster):
    topic, group = unique("kafkajs-roundtrip"), unique("kafkajs-group")
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic(topic, num_partitions=3)

    result = run_node(
        "kafkajs-roundtrip.js",
        "--brokers",
        cluster.kafka_bootstrap,
        "--topic",
        topic,
        "--group",
        group,
        "--count",
        "300",
        "--timeout-ms",
        "30000",
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    (summary,) = [line for line in json_lines(result.stdout) if "produced" in line]
    assert summary["produced"] == summary["consumed"] == 300
    assert summary["missing"] == []
    assert summary["produced_partitions"] == [0, 1, 2]  # keys spread over the 3 partitions
    committed = {int(p): offset for p, offset in summary["committed"].items()}
    assert sum(committed.values()) == 300

    # The Kafka client's commits are the group's offsets the gRPC side sees, and they are
    # the end of each partition.
    with Admin(cluster.bootstrap) as admin:
        description = admin.groups.describe_group(group)
    assert {o.partition: o.offset for o in description.offsets if o.topic == topic} == committed
    with Consumer(bootstrap_servers=cluster.bootstrap) as probe:
        ends = probe.end_offsets([TopicPartition(topic, p) for p in range(3)])
    assert {tp.partition: end for tp, end in ends.items()} == committed


def test_nestjs_microservice_event_and_request_reply(cluster, tmp_path):
    group = unique("nest")
    app = NodeProcess(
        "nest-app.js",
        "--brokers",
        cluster.kafka_bootstrap,
        "--group-id",
        group,
        stderr_path=tmp_path / "nest-app.stderr",
    )
    try:
        app.wait_for_line(lambda line: line.get("ready") is True, 30, "the Nest app to start")

        result = run_node(
            "nest-client.js",
            "--brokers",
            cluster.kafka_bootstrap,
            "--group-id",
            group,
            "--timeout-ms",
            "30000",
        )
        assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        lines = json_lines(result.stdout)
        (emitted,) = [line for line in lines if line.get("emitted") == "events.created"]
        (reply,) = [line for line in lines if line.get("pattern") == "math.sum"]
        assert reply == {"pattern": "math.sum", "request": [1, 2, 3], "reply": 6}

        event = app.wait_for_line(
            lambda line: (
                line.get("event") == "events.created" and line.get("payload") == emitted["payload"]
            ),
            20,
            "the Nest app to print the emitted event",
        )
        assert event["payload"]["name"] == "widget"
        assert any(
            line.get("request") == "math.sum" and line.get("result") == 6 for line in app.lines
        ), app.output()
    finally:
        app.stop()


def test_kafkajs_producer_rides_through_a_leader_kill(cluster, tmp_path):
    topic = unique("kafkajs-failover")
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic(topic, num_partitions=1)
        leader = admin.describe_topic(topic).partitions[0].leader_id
    assert leader in cluster.brokers

    count = 400
    producer = NodeProcess(
        "kafkajs-sequence.js",
        "--brokers",
        cluster.kafka_bootstrap,
        "--topic",
        topic,
        "--partition",
        "0",
        "--count",
        str(count),
        "--interval-ms",
        "5",
        "--retries",
        "20",
        stderr_path=tmp_path / "sequence.stderr",
    )
    try:
        producer.wait_for_line(
            lambda line: line.get("n", -1) >= 100 and "offset" in line,
            30,
            "kafkajs to have 100 numbers acknowledged",
        )
        cluster.brokers[leader].kill()
        lines_at_kill = len(producer.lines)
        code = producer.wait(TIMEOUT_S)
        done = producer.wait_for_line(
            lambda line: line.get("done") is True, 5, "the sequence to finish"
        )
    finally:
        producer.stop()

    acked = [line["n"] for line in producer.lines if "offset" in line]
    failed = [line for line in producer.lines if "error" in line]
    assert done["acked"] == len(acked)
    assert lines_at_kill < count, "the sequence ended before the leader was killed"

    with Admin(cluster.bootstrap) as admin:
        new_leader = admin.describe_topic(topic).partitions[0].leader_id
    assert new_leader != leader

    # The guarantee: every number kafkajs saw acknowledged (acks -1) survived the failover.
    stored = [int(r.value) for r in read_partition(cluster.bootstrap, topic, 0)]
    missing = sorted(set(acked) - set(stored))
    assert not missing, f"acknowledged but not stored: {missing}\n{producer.output()}"
    # Not idempotent: a retried send may store a number twice, but in sequence order.
    first_seen = list(dict.fromkeys(stored))
    assert first_seen == sorted(first_seen)
    # And kafkajs rode through the failover by itself: no send failed for good.
    assert code == 0 and not failed and len(acked) == count, producer.output()
