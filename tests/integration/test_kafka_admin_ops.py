"""The admin operations over the Kafka listener, with unmodified Kafka clients, on a real
3-broker cluster: confluent-kafka's AdminClient (alter_configs, incremental_alter_configs,
create_partitions, delete_records, delete_consumer_groups) and kafka-python's
(delete_group_offsets, describe_log_dirs). Refused requests change nothing, and every change
survives a restart of the whole cluster."""

from __future__ import annotations

import time

import pytest

from raftka import Admin
from tests.harness import LocalCluster, wait_for

pytestmark = pytest.mark.integration
SETTINGS = {
    "default.replication.factor": "3",
    "offsets.topic.num.partitions": "3",
    "group.initial.rebalance.delay.ms": "100",
}
TOPIC = "ops"


@pytest.fixture
def cluster(cluster_factory) -> LocalCluster:
    cluster = cluster_factory(3, SETTINGS)
    cluster.start()
    cluster.wait_ready()
    return cluster


def _admin_client(cluster: LocalCluster):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": cluster.kafka_bootstrap})


def _result(futures: dict, key=None):
    (future,) = futures.values() if key is None else (futures[key],)
    return future.result(timeout=30)


def _explicit_configs(cluster: LocalCluster, topic: str) -> dict[str, str]:
    with Admin(cluster.bootstrap) as admin:
        return {c.name: c.value for c in admin.describe_topic(topic).configs if not c.is_default}


def _produce(cluster: LocalCluster, topic: str, partition: int, count: int) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": cluster.kafka_bootstrap, "acks": "all"})
    for i in range(count):
        producer.produce(topic, f"v{i}".encode(), partition=partition)
    assert producer.flush(30) == 0


def _log_starts(cluster: LocalCluster, topic: str, partition: int) -> dict[int, int]:
    """Each broker's log start offset of a partition, as its DescribeLogDirs says (gRPC)."""
    with Admin(cluster.bootstrap) as admin:
        return {d.broker_id: p.log_start_offset for d in admin.describe_log_dirs()
                for p in d.partitions if (p.topic, p.partition) == (topic, partition)}


def test_topic_admin_operations_through_confluent_kafka_survive_a_restart(cluster):
    from confluent_kafka import KafkaError, KafkaException, TopicPartition
    from confluent_kafka.admin import (
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewPartitions,
        NewTopic,
        ResourceType,
    )

    client = _admin_client(cluster)
    _result(client.create_topics([NewTopic(TOPIC, 2, 3, config={"retention.ms": "86400000"})]))

    # IncrementalAlterConfigs: set one, delete another
    resource = ConfigResource(ResourceType.TOPIC, TOPIC, incremental_configs=[
        ConfigEntry("segment.bytes", "1048576", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)])
    _result(client.incremental_alter_configs([resource]))
    assert _explicit_configs(cluster, TOPIC) == {"segment.bytes": "1048576"}
    described = _result(client.describe_configs([ConfigResource(ResourceType.TOPIC, TOPIC)]))
    assert described["segment.bytes"].value == "1048576"
    assert described["retention.ms"].is_default

    # a bad value and an unknown key are INVALID_CONFIG naming the key; nothing changes
    for entry, key in ((ConfigEntry("retention.ms", "soon",
                                    incremental_operation=AlterConfigOpType.SET), "retention.ms"),
                       (ConfigEntry("no.such.config", "1",
                                    incremental_operation=AlterConfigOpType.SET),
                        "no.such.config")):
        with pytest.raises(KafkaException) as refused:
            _result(client.incremental_alter_configs([ConfigResource(
                ResourceType.TOPIC, TOPIC, incremental_configs=[entry])]))
        error = refused.value.args[0]
        assert error.code() == KafkaError.INVALID_CONFIG and key in error.str()
    assert _explicit_configs(cluster, TOPIC) == {"segment.bytes": "1048576"}

    # AlterConfigs (the legacy full replace)
    _result(client.alter_configs([ConfigResource(
        ResourceType.TOPIC, TOPIC, set_config={"retention.bytes": "100000000",
                                               "max.message.bytes": "2000000"})]))
    assert _explicit_configs(cluster, TOPIC) == {"retention.bytes": "100000000",
                                                 "max.message.bytes": "2000000"}

    # CreatePartitions: grow; shrinking (or staying) is INVALID_PARTITIONS, changing nothing
    _result(client.create_partitions([NewPartitions(TOPIC, 4)]))
    with pytest.raises(KafkaException) as refused:
        _result(client.create_partitions([NewPartitions(TOPIC, 3)]))
    assert refused.value.args[0].code() == KafkaError.INVALID_PARTITIONS
    assert "partitions can only be added" in refused.value.args[0].str()
    metadata = client.list_topics(TOPIC, timeout=10).topics[TOPIC]
    assert sorted(metadata.partitions) == [0, 1, 2, 3]
    assert all(len(p.replicas) == 3 for p in metadata.partitions.values())
    # the new partitions take writes on every replica
    _produce(cluster, TOPIC, 3, 5)
    wait_for(lambda: _log_starts(cluster, TOPIC, 3).keys() == {1, 2, 3}, 15,
             "ops-3 to be hosted by every broker")

    # DeleteRecords: the leader's log start moves, the followers follow
    _produce(cluster, TOPIC, 0, 20)
    (deleted,) = client.delete_records([TopicPartition(TOPIC, 0, 12)]).values()
    assert deleted.result(timeout=30).low_watermark == 12
    beyond = client.delete_records([TopicPartition(TOPIC, 0, 500)])
    with pytest.raises(KafkaException) as refused:
        _result(beyond)
    assert refused.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE
    wait_for(lambda: set(_log_starts(cluster, TOPIC, 0).values()) == {12}, 15,
             "every replica of ops-0 to start at 12")
    with Admin(cluster.bootstrap) as admin:
        assert admin.describe_topic(TOPIC).partitions[0].log_start_offset == 12

    # a read below the log start: OFFSET_OUT_OF_RANGE, so auto.offset.reset applies
    assert _first_offset_read(cluster, TOPIC, 0, start=3) == 12

    # every change survives a restart of the whole cluster
    cluster.stop_all()
    cluster.start()
    cluster.wait_ready(timeout_s=60)
    assert _explicit_configs(cluster, TOPIC) == {"retention.bytes": "100000000",
                                                 "max.message.bytes": "2000000"}
    with Admin(cluster.bootstrap) as admin:
        description = admin.describe_topic(TOPIC)
    assert len(description.partitions) == 4
    wait_for(lambda: set(_log_starts(cluster, TOPIC, 0).values()) == {12}, 20,
             "ops-0 to start at 12 on every broker after the restart")


def _first_offset_read(cluster: LocalCluster, topic: str, partition: int, start: int) -> int:
    """The offset of the first record a consumer assigned at `start` gets (earliest reset)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": cluster.kafka_bootstrap, "group.id": "reader",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, partition, start)])
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                return int(message.offset())
        raise AssertionError("no record read")
    finally:
        consumer.close()


def test_group_deletion_and_offset_delete_through_kafka_clients(cluster):
    from confluent_kafka import Consumer, KafkaError, KafkaException
    from kafka import TopicPartition as KafkaPythonPartition
    from kafka.admin import KafkaAdminClient

    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("ga", num_partitions=2, replication_factor=3)
        admin.create_topic("gb", num_partitions=1, replication_factor=3)
    _produce(cluster, "ga", 0, 3)
    _produce(cluster, "gb", 0, 3)

    def consume_and_commit(group: str, topics: list[str]) -> Consumer:
        consumer = Consumer({"bootstrap.servers": cluster.kafka_bootstrap, "group.id": group,
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumer.subscribe(topics)
        seen = 0
        deadline = time.monotonic() + 30
        while seen < 6 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                seen += 1
        assert seen == 6
        consumer.commit(asynchronous=False)
        return consumer

    live = consume_and_commit("g-live", ["ga", "gb"])
    client = _admin_client(cluster)
    # a group with members: NON_EMPTY_GROUP, and its offsets stay
    with pytest.raises(KafkaException) as refused:
        _result(client.delete_consumer_groups(["g-live"]))
    assert refused.value.args[0].code() == KafkaError.NON_EMPTY_GROUP

    kp = KafkaAdminClient(bootstrap_servers=cluster.kafka_bootstrap)
    try:
        # OffsetDelete of a subscribed topic: GROUP_SUBSCRIBED_TO_TOPIC (86)
        answer = kp.delete_group_offsets("g-live", [KafkaPythonPartition("ga", 0)])
        assert {tp: getattr(err, "errno", err) for tp, err in answer.items()} \
            == {KafkaPythonPartition("ga", 0): 86}
        live.close()
        # empty now: the offsets of gb go, those of ga stay
        answer = kp.delete_group_offsets("g-live", [KafkaPythonPartition("gb", 0)])
        assert all(getattr(err, "errno", err) in (0, None) for err in answer.values())
        with Admin(cluster.bootstrap) as admin:
            left = {(o.topic, o.partition) for o in admin.groups.describe_group(
                "g-live").offsets}
        assert ("gb", 0) not in left and ("ga", 0) in left

        # DescribeLogDirs: every broker answers with the partitions it hosts
        dirs = kp.describe_log_dirs()
        assert len(dirs) == 3
        sizes = [p for broker in dirs for result in broker["log_dirs"]
                 for topic in result["topics"] if topic["name"] == "ga"
                 for p in topic["partitions"]]
        assert len(sizes) == 6 and any(p["partition_size"] > 0 for p in sizes)
    finally:
        kp.close()

    # DeleteGroups of the now empty group removes it, durably
    _result(client.delete_consumer_groups(["g-live"]))
    with pytest.raises(KafkaException) as refused:
        _result(client.delete_consumer_groups(["g-live"]))
    assert refused.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND
    cluster.stop_all()
    cluster.start()
    cluster.wait_ready(timeout_s=60)
    with Admin(cluster.bootstrap) as admin:
        wait_for(lambda: _group_gone(admin, "g-live"), 30, "the group to stay deleted")


def _group_gone(admin: Admin, group: str) -> bool:
    from raftka.client.errors import RaftkaError

    try:
        admin.groups.describe_group(group)
    except RaftkaError as exc:
        return "GROUP_ID_NOT_FOUND" in str(exc)
    return False
