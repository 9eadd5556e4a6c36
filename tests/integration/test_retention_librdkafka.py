"""librdkafka producing records without timestamps to a real broker with the default 7-day
retention: nothing may be deleted, before or after a restart.

Regression: librdkafka's tests produce with timestamp -1, which librdkafka sends as a batch
with baseTimestamp -1 and maxTimestamp 0; the broker read 0 as the segment's largest
timestamp and deleted it at the first retention check ("retention deleted 1 segment(s)").
"""

from __future__ import annotations

import time

import grpc
import pytest

from raftka import Admin
from raftka.proto.raftka.v1 import broker_pb2, broker_pb2_grpc
from tests.harness import LocalCluster

pytestmark = pytest.mark.integration
TOPIC = "no-timestamps"
COUNT = 60


def offsets(cluster: LocalCluster) -> tuple[int, int]:
    """(log start offset, log end offset) of the topic's partition 0."""
    stub = broker_pb2_grpc.BrokerServiceStub(grpc.insecure_channel(cluster.brokers[1].address))
    request = broker_pb2.ListOffsetsRequest(
        partitions=[
            broker_pb2.ListOffsetsPartition(topic=TOPIC, partition=0, timestamp_ms=spec)
            for spec in (-2, -1)
        ]
    )
    earliest, latest = stub.ListOffsets(request, timeout=5).partitions
    return earliest.offset, latest.offset


def stays_whole(cluster: LocalCluster, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert offsets(cluster) == (0, COUNT)
        time.sleep(0.1)
    assert "retention deleted" not in cluster.brokers[1].log_text()


def test_records_without_timestamps_survive_retention_and_a_restart(cluster_factory):
    from confluent_kafka import Producer as KafkaProducer

    # Retention runs every maintenance round (200 ms); small segments so that several roll
    # and a restart opens them from their indexes.
    cluster = cluster_factory(1, {"log.retention.check.interval.ms": "200"})
    cluster.start()
    cluster.wait_ready()
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic(TOPIC, num_partitions=1, configs={"segment.bytes": "1024"})
    producer = KafkaProducer({"bootstrap.servers": cluster.kafka_bootstrap, "linger.ms": 5})
    for i in range(COUNT):
        producer.produce(TOPIC, value=b"v%03d" % i + b"." * 60, timestamp=-1)
        producer.poll(0)
        time.sleep(0.002)
    assert producer.flush(15) == 0
    segments = list((cluster.brokers[1].data_dir / "logs" / f"{TOPIC}-0").glob("*.log"))
    assert len(segments) >= 3
    stays_whole(cluster, 2.0)
    cluster.brokers[1].stop()
    cluster.start()
    cluster.wait_ready()
    stays_whole(cluster, 2.0)
