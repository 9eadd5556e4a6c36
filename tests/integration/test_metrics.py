"""Prometheus metrics on a real broker: /metrics parses and moves when records flow."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from raftka import Admin, Consumer, Producer
from raftka.client.consumer import TopicPartition
from tests.harness import wait_for

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_when_records_are_produced_and_consumed(broker):
    port = broker.brokers[1].metrics_port
    before = scrape(port)
    assert value(before, "kafka_controller_kafkacontroller_activecontrollercount") == 1
    assert value(before, "kafka_server_raft_metrics_current_leader") == 1
    assert value(before, "kafka_server_raft_metrics_current_epoch") >= 1
    assert value(before, "process_resident_memory_bytes") > 0
    assert value(before, "kafka_server_brokertopicmetrics_messagesin_total", topic="m") == 0
    # the start-up heap is frozen (broker/gc_pauses.py): tens of thousands of objects
    assert value(before, "raftka_gc_frozen_objects") > 10_000

    with Admin(bootstrap_servers=broker.bootstrap) as admin:
        admin.create_topic("m", num_partitions=2, replication_factor=1)
    with Producer(bootstrap_servers=broker.bootstrap, acks="all") as producer:
        for i in range(50):
            producer.send("m", value=b"x" * 100, key=str(i).encode())
        producer.flush()
    consumer = Consumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest")
    consumer.assign([TopicPartition("m", 0), TopicPartition("m", 1)])
    got = 0

    def read_all() -> bool:
        nonlocal got
        got += sum(len(r) for r in consumer.poll(timeout_ms=200).values())
        return got >= 50

    wait_for(read_all, 10, "50 records read back")
    consumer.close()

    after = scrape(port)
    assert value(after, "kafka_server_brokertopicmetrics_messagesin_total", topic="m") == 50
    assert value(after, "kafka_server_brokertopicmetrics_bytesin_total", topic="m") > 50 * 100
    assert value(after, "kafka_server_brokertopicmetrics_bytesout_total", topic="m") > 50 * 100
    assert value(after, "kafka_server_replicamanager_partitioncount") >= 2
    assert value(after, "kafka_server_replicamanager_leadercount") >= 2
    assert value(after, "kafka_server_replicamanager_underreplicatedpartitions") == 0
    assert value(after, "kafka_controller_kafkacontroller_offlinepartitionscount") == 0
    assert value(after, "kafka_controller_kafkacontroller_activebrokercount") == 1
    produced = value(after, "kafka_network_requestmetrics_requests_total",
                     request="Produce", protocol="grpc", error="NONE")
    assert produced >= 1
    assert value(after, "kafka_network_requestmetrics_totaltime_seconds_count",
                 request="Produce", protocol="grpc") == produced
    assert value(after, "kafka_server_raft_metrics_high_watermark") > value(
        before, "kafka_server_raft_metrics_high_watermark"
    )
    # every collection is timed; the young generation runs many times a second under load
    assert value(after, "raftka_gc_pause_seconds_count", generation="0") > 0
    assert value(after, "raftka_gc_pause_seconds_bucket", generation="0", le="+Inf") == value(
        after, "raftka_gc_pause_seconds_count", generation="0")


def test_records_out_count_every_consumer_path(broker):
    """The console's "records out" chart reads raftka_brokertopicmetrics_messagesout. It
    counted only gRPC fetches that asked the broker to decode records, so the SDK's and
    Kafka clients' consumption showed 0 records/s out; now every fetch path counts the
    offsets it served."""
    from confluent_kafka import Consumer as KafkaConsumer

    port = broker.brokers[1].metrics_port
    with Admin(bootstrap_servers=broker.bootstrap) as admin:
        admin.create_topic("out", num_partitions=1, replication_factor=1)
    with Producer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=0) as producer:
        for i in range(40):  # several batches
            producer.send("out", value=b"v%d" % i).get(timeout=10)
    before = value(scrape(port), "raftka_brokertopicmetrics_messagesout_total", topic="out")
    assert before == 0

    consumer = Consumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest")
    consumer.assign([TopicPartition("out", 0)])
    got = 0

    def read_all() -> bool:
        nonlocal got
        got += sum(len(r) for r in consumer.poll(timeout_ms=200).values())
        return got >= 40

    wait_for(read_all, 10, "40 records read back by the SDK")
    consumer.close()
    after_sdk = value(scrape(port), "raftka_brokertopicmetrics_messagesout_total", topic="out")
    assert after_sdk == 40

    kafka = KafkaConsumer({"bootstrap.servers": broker.kafka_bootstrap, "group.id": "out-g",
                           "auto.offset.reset": "earliest", "enable.auto.commit": False})
    kafka.subscribe(["out"])
    seen = 0
    try:
        def kafka_read_all() -> bool:
            nonlocal seen
            seen += sum(1 for m in kafka.consume(50, timeout=0.5) if m.error() is None)
            return seen >= 40

        wait_for(kafka_read_all, 30, "40 records read back over the Kafka listener")
    finally:
        kafka.close()
    after_kafka = value(scrape(port), "raftka_brokertopicmetrics_messagesout_total", topic="out")
    assert after_kafka == 80


def test_kafka_requests_are_counted_per_api(broker):
    from confluent_kafka.admin import AdminClient

    AdminClient({"bootstrap.servers": broker.kafka_bootstrap}).list_topics(timeout=10)
    samples = scrape(broker.brokers[1].metrics_port)
    assert value(samples, "kafka_network_requestmetrics_requests_total",
                 request="Metadata", protocol="kafka", error="NONE") >= 1
    assert value(samples, "kafka_network_requestmetrics_requests_total",
                 request="ApiVersions", protocol="kafka", error="NONE") >= 1


def test_an_isr_shrink_and_expand_are_counted_and_under_replication_shows(cluster_factory):
    cluster = cluster_factory(3, {"replica.lag.time.max.ms": "1000"})
    cluster.start()
    cluster.wait_ready()
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        admin.create_topic("isr", num_partitions=1, replication_factor=3)
        leader = admin.describe_topic("isr").partitions[0].leader_id
    follower = next(i for i in cluster.brokers if i != leader)
    port = cluster.brokers[leader].metrics_port
    cluster.brokers[follower].kill()

    def shrunk() -> bool:
        samples = scrape(port)
        return (value(samples, "kafka_server_replicamanager_isrshrinks_total") >= 1
                and value(samples, "kafka_server_replicamanager_underreplicatedpartitions") >= 1)

    wait_for(shrunk, 20, "an ISR shrink on the leader")
    cluster.brokers[follower].start()
    wait_for(lambda: value(scrape(port), "kafka_server_replicamanager_isrexpands_total") >= 1,
             30, "the ISR expanding again")


def test_consumer_group_lag_goes_up_when_produced_and_to_zero_after_the_commit(broker):
    port = broker.brokers[1].metrics_port
    with Admin(bootstrap_servers=broker.bootstrap) as admin:
        admin.create_topic("lagged", num_partitions=1, replication_factor=1)

    def produce(count: int) -> None:
        with Producer(bootstrap_servers=broker.bootstrap, acks="all") as producer:
            for i in range(count):
                producer.send("lagged", value=b"v%d" % i)
            producer.flush()

    def lag() -> float | None:
        return scrape(port).get(("raftka_consumergroup_lag", (
            ("group", "lagging"), ("partition", "0"), ("topic", "lagged"))))

    produce(10)
    consumer = Consumer("lagged", bootstrap_servers=broker.bootstrap, group_id="lagging",
                        auto_offset_reset="earliest", enable_auto_commit=False)
    got = 0

    def read(wanted: int) -> bool:
        nonlocal got
        got += sum(len(r) for r in consumer.poll(timeout_ms=200).values())
        return got >= wanted

    try:
        wait_for(lambda: read(10), 20, "10 records read")
        consumer.commit()
        wait_for(lambda: lag() == 0, 10, "lag 0 after the first commit")
        produce(25)
        wait_for(lambda: lag() == 25, 10, "lag 25 after 25 more records")
        wait_for(lambda: read(35), 20, "the 25 new records read")
        consumer.commit()
        wait_for(lambda: lag() == 0, 10, "lag back to 0 after the commit")
    finally:
        consumer.close()


def test_lag_is_reported_for_partitions_the_coordinator_has_no_replica_of(cluster_factory):
    """RF=1 over 3 brokers: most partitions live on brokers other than the group's
    coordinator, which must still report their lag (it asks their leaders), and so must
    the console's group page."""
    from raftka.client.console.backend import ClusterBackend

    cluster = cluster_factory(3)
    cluster.start()
    cluster.wait_ready()
    partitions = 6
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        admin.create_topic("spread", num_partitions=partitions, replication_factor=1)
    with Producer(bootstrap_servers=cluster.bootstrap, acks="all") as producer:
        for p in range(partitions):
            for i in range(5 * (p + 1)):
                producer.send("spread", value=b"r%d" % i, partition=p)
        producer.flush()
    consumer = Consumer("spread", bootstrap_servers=cluster.bootstrap, group_id="far",
                        auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        def assigned() -> bool:
            consumer.poll(timeout_ms=200)
            return len(consumer.assignment()) == partitions

        wait_for(assigned, 30, "all 6 partitions assigned")
        # committed offset p on partition p: lag = 5 (p + 1) - p, a different value each
        consumer.commit({TopicPartition("spread", p): p for p in range(partitions)})
        expected = {p: 5 * (p + 1) - p for p in range(partitions)}
        with Admin(bootstrap_servers=cluster.bootstrap) as admin:
            coordinator = admin.groups.describe_group("far").coordinator_id
            replicas = {p.partition: list(p.replicas)
                        for p in admin.describe_topic("spread").partitions}
        elsewhere = [p for p, r in replicas.items() if coordinator not in r]
        assert elsewhere, f"every partition has a replica on coordinator {coordinator}: {replicas}"
        port = cluster.brokers[coordinator].metrics_port

        def lags() -> dict[int, float]:
            return {int(dict(labels)["partition"]): v
                    for (name, labels), v in scrape(port).items()
                    if name == "raftka_consumergroup_lag" and dict(labels)["group"] == "far"}

        wait_for(lambda: lags() == expected, 15,
                 f"a lag sample for every partition, {expected} (partitions {elsewhere} "
                 f"have no replica on coordinator {coordinator})")

        backend = ClusterBackend(cluster.bootstrap)
        try:
            page = backend.group("far")
        finally:
            backend.close()
        assert {o["partition"]: o["lag"] for o in page["offsets"]} == expected
        assert page["total_lag"] == sum(expected.values())
    finally:
        consumer.close()
