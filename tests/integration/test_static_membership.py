"""KIP-345 static membership with an unmodified Kafka client (confluent-kafka/librdkafka) on a
real 3-broker cluster, librdkafka's test 0102: a static member that closes and comes back
within its session timeout gets its partitions back with no rebalance, so the other member
keeps its partitions (no revocation) and the generation stays."""

from __future__ import annotations

import threading
import time

import pytest

from raftka import Admin
from tests.harness import LocalCluster, wait_for

pytestmark = pytest.mark.integration
SETTINGS = {"default.replication.factor": "3", "offsets.topic.num.partitions": "3",
            "group.initial.rebalance.delay.ms": "100"}
TOPIC, GROUP = "static-t", "static-g"


@pytest.fixture
def cluster(cluster_factory) -> LocalCluster:
    cluster = cluster_factory(3, SETTINGS)
    cluster.start()
    cluster.wait_ready()
    return cluster


class Member:
    """A confluent-kafka consumer polled on its own thread, recording its (re)assignments."""

    def __init__(self, cluster: LocalCluster, instance: str) -> None:
        from confluent_kafka import Consumer

        self.assigned: list[set[int]] = []
        self.revoked: list[set[int]] = []
        self.consumer = Consumer({
            "bootstrap.servers": cluster.kafka_bootstrap, "group.id": GROUP,
            "group.instance.id": instance, "session.timeout.ms": 15000,
            "heartbeat.interval.ms": 500, "auto.offset.reset": "earliest",
            "enable.auto.commit": False})
        self.consumer.subscribe(
            [TOPIC],
            on_assign=lambda _c, parts: self.assigned.append({p.partition for p in parts}),
            on_revoke=lambda _c, parts: self.revoked.append({p.partition for p in parts}))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.consumer.poll(0.2)

    @property
    def current(self) -> set[int]:
        return self.assigned[-1] if self.assigned else set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.consumer.close()


def generation(cluster: LocalCluster) -> int:
    with Admin(cluster.bootstrap) as admin:
        return admin.groups.describe_group(GROUP).group_epoch


def test_a_static_member_that_returns_within_its_session_causes_no_rebalance(cluster):
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic(TOPIC, num_partitions=4, replication_factor=3)
    a, b = Member(cluster, "instance-a"), Member(cluster, "instance-b")
    try:
        wait_for(lambda: len(a.current) == 2 and len(b.current) == 2
                 and a.current | b.current == {0, 1, 2, 3}, 30, "both members to hold two")
        before = generation(cluster)
        a_partitions, b_partitions = set(a.current), set(b.current)
        revokes_of_a = len(a.revoked)
        b.close()  # a static member sends no LeaveGroup: its entry waits out the session
        time.sleep(1.0)
        back = Member(cluster, "instance-b")
        try:
            wait_for(lambda: back.current == b_partitions, 20, "the returning member's partitions")
            time.sleep(2.0)  # a rebalance, had one started, would have revoked a's by now
            assert len(a.revoked) == revokes_of_a and a.current == a_partitions
            assert generation(cluster) == before
            assert back.revoked == []
        finally:
            back.close()
    finally:
        a.close()
