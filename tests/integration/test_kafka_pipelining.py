"""A Kafka producer pipelines requests on one connection; the listener appends each as it
reads it and answers them in order once acknowledged, instead of reading the next request
only after the previous one's acks=all wait (one replication round trip per request per
connection: at 3,000 partitions confluent-kafka's requests queued past their timeout).

A follower is paused so no acks=all write can complete: every pipelined request must still
be appended (the leader's records-in counter counts them) while none is answered; once the
follower resumes, all are acknowledged in send order."""

from __future__ import annotations

import signal
import time

import pytest
from confluent_kafka import Producer as KafkaProducer

from raftka import Admin
from tests.harness import wait_for
from tests.integration.test_metrics import scrape, value

pytestmark = pytest.mark.integration
REQUESTS = 5


def records_in(port: int, topic: str) -> float:
    return value(scrape(port), "kafka_server_brokertopicmetrics_messagesin_total", topic=topic)


def test_pipelined_produce_requests_are_appended_before_the_first_is_acknowledged(
        cluster_factory):
    # The paused follower must stay in the ISR (and unfenced) for the whole test.
    cluster = cluster_factory(3, {"replica.lag.time.max.ms": "60000",
                                  "broker.session.timeout.ms": "60000"})
    cluster.start()
    cluster.wait_ready()
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("piped", 1, 3)

        def full_isr() -> bool:
            partition = admin.describe_topic("piped").partitions[0]
            return len(partition.isr) == 3 and partition.leader_id > 0
        wait_for(full_isr, 30, "a full ISR of 3")
        leader = admin.describe_topic("piped").partitions[0].leader_id
    controller = cluster.describe().controller_id
    paused = next(i for i in (1, 2, 3) if i not in (leader, controller))
    delivered: list[tuple[int, object]] = []
    producer = KafkaProducer({
        "bootstrap.servers": f"127.0.0.1:{cluster.brokers[leader].kafka_port}",
        "acks": "all", "linger.ms": 0, "enable.idempotence": False,
        "max.in.flight.requests.per.connection": REQUESTS, "message.timeout.ms": 60_000,
        "request.timeout.ms": 60_000})
    producer.list_topics("piped", timeout=10)
    cluster.brokers[paused].signal(signal.SIGSTOP)
    try:
        for i in range(REQUESTS):
            producer.produce("piped", b"%d" % i, partition=0,
                             on_delivery=lambda err, msg: delivered.append((msg.offset(), err)))
            producer.poll(0)
            time.sleep(0.2)  # each record its own request, the previous still in flight
        port = cluster.brokers[leader].metrics_port
        # Before: only the first request was read; the rest waited behind its acks.
        wait_for(lambda: records_in(port, "piped") >= REQUESTS, 20,
                 f"all {REQUESTS} pipelined requests appended by the leader")
        producer.poll(0.5)
        assert delivered == []  # the paused follower holds every acks=all write
    finally:
        cluster.brokers[paused].signal(signal.SIGCONT)
    assert producer.flush(30) == 0
    assert delivered == [(i, None) for i in range(REQUESTS)]
