"""BrokerMetrics and the /metrics answer, without a broker."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from raftka.broker.kafka.api_table import API_NAMES, SUPPORTED
from raftka.broker.metrics import BrokerMetrics, MetricsServer


def samples(metrics: BrokerMetrics) -> dict[str, float]:
    return {
        s.name + str(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }


def test_isr_changes_count_shrinks_and_expands_only():
    metrics = BrokerMetrics()
    metrics.isr_changed((1, 2, 3), (1, 2))
    metrics.isr_changed((1, 2), (1, 2, 3))
    metrics.isr_changed((1, 2), (1, 3))  # neither: a swap is not a shrink
    found = samples(metrics)
    assert found["kafka_server_replicamanager_isrshrinks_total[]"] == 1
    assert found["kafka_server_replicamanager_isrexpands_total[]"] == 1


def test_records_and_requests_are_labelled():
    metrics = BrokerMetrics()
    metrics.appended("t", 3, 300)
    metrics.served("t", 100, follower=False)
    metrics.served("t", 50, follower=True)
    metrics.served("t", 0, follower=False)
    metrics.request_done("Produce", "kafka", 0.002, "NONE")
    found = samples(metrics)
    assert found["kafka_server_brokertopicmetrics_messagesin_total[('topic', 't')]"] == 3
    assert found["kafka_server_brokertopicmetrics_bytesout_total[('topic', 't')]"] == 100
    assert found["kafka_server_brokertopicmetrics_replicationbytesout_total[('topic', 't')]"] == 50
    key = "kafka_network_requestmetrics_totaltime_seconds_bucket"
    assert found[f"{key}[('le', '0.0025'), ('protocol', 'kafka'), ('request', 'Produce')]"] == 1


def test_the_http_answer():
    server = MetricsServer(BrokerMetrics(), "127.0.0.1", 0)
    status, content_type, body = server.answer(b"GET /metrics HTTP/1.1")
    assert status == "200 OK" and content_type.startswith("text/plain") and b"process_" in body
    assert server.answer(b"HEAD /metrics HTTP/1.1")[2] == b""
    assert server.answer(b"POST /metrics HTTP/1.1")[0].startswith("405")
    assert server.answer(b"GET /nope HTTP/1.1")[0].startswith("404")
    assert server.answer(b"garbage")[0].startswith("405")


def test_every_kafka_api_served_has_a_metrics_name():
    assert set(API_NAMES) == set(SUPPORTED)


class _Replica:
    def __init__(self, topic: str, partition: int, leader: bool, hw: int) -> None:
        from raftka.broker.partition import TopicPartition

        self.tp = TopicPartition(topic, partition)
        self.is_leader = leader
        self.high_watermark = hw
        self.isr = self.replicas = [1]
        self.min_insync_replicas = 1


def test_consumer_group_lag_is_high_watermark_minus_committed_from_hosted_replicas():
    from raftka.broker.metrics import consumer_group_lag

    hosted = [_Replica("t", 0, False, 7), _Replica("t", 0, True, 10), _Replica("t", 1, False, 4)]
    committed = [("g", "t", 0, 3), ("g", "t", 1, 4), ("g", "t", 2, 0), ("h", "t", 1, 9)]
    assert sorted(consumer_group_lag(committed, hosted)) == [
        ("g", "t", 0, 7),  # the leader's high watermark wins over a follower's
        ("g", "t", 1, 0),
        ("h", "t", 1, 0),  # committed past what this replica knows: never negative
    ]  # t-2 has no replica here: left out, not guessed


def test_consumer_group_lag_is_exported_per_group_topic_partition():
    from raftka.broker.metrics import BrokerState

    class Image:
        topics: dict[str, object] = {}
        brokers: dict[int, object] = {}
        offset = 0

    metrics = BrokerMetrics()
    metrics.watch(BrokerState(
        broker_id=1, partitions=lambda: [_Replica("t", 0, True, 10)], image=Image,
        is_controller=lambda: False, purgatory_size=lambda: 0, raft_status=dict,
        fenced=lambda: False, committed_offsets=lambda: [("g", "t", 0, 4)],
    ))
    found = samples(metrics)
    key = "raftka_consumergroup_lag[('group', 'g'), ('partition', '0'), ('topic', 't')]"
    assert found[key] == 6
