"""flush.messages=1 (Kafka's topic config) means fsync before acknowledging: an acks=all
write is acknowledged only once every in-sync replica has synced it to disk, so it survives
power loss of all of them. Seen before: the leader flushed in the background after
answering and followers never flushed by count, so their recovery points lagged the acks."""

from __future__ import annotations

import pytest

from raftka import Admin, Producer
from tests.integration.test_replication import SETTINGS, partition_state

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def recovery_points(admin: Admin, topic: str, partition: int) -> dict[int, int]:
    """Each broker's own recovery point (DescribeLogDirs): everything below it is fsynced.
    (The checkpoint files on disk are written every few seconds and may lag it.)"""
    return {answer.broker_id: int(p.recovery_point)
            for answer in admin.describe_log_dirs() for p in answer.partitions
            if (p.topic, p.partition) == (topic, partition)}


def test_acks_all_waits_for_every_replica_to_sync(cluster_factory):
    cluster = cluster_factory(3, SETTINGS)
    cluster.start()
    cluster.wait_ready()
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("durable", num_partitions=1, configs={"flush.messages": "1"})
        state = partition_state(cluster, "durable", 0)
        with Producer(cluster.bootstrap, acks="all", linger_ms=0) as producer:
            for i in range(20):
                acked = producer.send("durable", str(i).encode(), partition=0).get(30)
                synced = recovery_points(admin, "durable", 0)
                for broker_id in state.isr:  # synced everywhere before the answer came
                    assert synced[broker_id] > acked.offset, (broker_id, acked.offset, synced)
