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


def test_repeated_calls_add_up_per_label_values():
    """The paths keep each label child after its first use: the keys must tell apart
    everything the labels do (follower or not, error, topic)."""
    metrics = BrokerMetrics()
    for _ in range(3):
        metrics.appended("t", 2, 20)
        metrics.appended("u", 1, 10)
        metrics.served("t", 10, follower=False)
        metrics.served("t", 5, follower=True)
        metrics.request_done("Fetch", "replication", 0.001, "NONE")
    metrics.request_done("Fetch", "replication", 0.001, "NOT_LEADER_OR_FOLLOWER")
    found = samples(metrics)
    assert found["kafka_server_brokertopicmetrics_messagesin_total[('topic', 't')]"] == 6
    assert found["kafka_server_brokertopicmetrics_bytesin_total[('topic', 'u')]"] == 30
    assert found["kafka_server_brokertopicmetrics_bytesout_total[('topic', 't')]"] == 30
    assert found["kafka_server_brokertopicmetrics_replicationbytesout_total[('topic', 't')]"] == 15
    requests = "kafka_network_requestmetrics_requests_total"
    assert found[f"{requests}[('error', 'NONE'), ('protocol', 'replication'), "
                 "('request', 'Fetch')]"] == 3
    assert found[f"{requests}[('error', 'NOT_LEADER_OR_FOLLOWER'), ('protocol', 'replication'), "
                 "('request', 'Fetch')]"] == 1
    assert found["kafka_network_requestmetrics_totaltime_seconds_count"
                 "[('protocol', 'replication'), ('request', 'Fetch')]"] == 4


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
    from raftka.broker.groups.lag import consumer_group_lag, local_end_offsets

    hosted = [_Replica("t", 0, False, 7), _Replica("t", 0, True, 10), _Replica("t", 1, False, 4)]
    committed = [("g", "t", 0, 3), ("g", "t", 1, 4), ("g", "t", 2, 0), ("h", "t", 1, 9)]
    assert sorted(consumer_group_lag(committed, local_end_offsets(hosted))) == [
        ("g", "t", 0, 7),  # the leader's high watermark wins over a follower's
        ("g", "t", 1, 0),
        ("h", "t", 1, 0),  # committed past what this replica knows: never negative
    ]  # t-2's end offset is not known: left out, not guessed


def test_only_partitions_not_hosted_are_asked_for_once_per_leader():
    from raftka.broker.groups.lag import end_offsets_to_ask

    leaders = {("t", 0): 1, ("t", 1): 2, ("t", 2): 3, ("t", 3): 2, ("t", 4): -1, ("u", 0): 3}
    committed = [("g", "t", 0, 5), ("g", "t", 1, 5), ("h", "t", 1, 2), ("g", "t", 2, 0),
                 ("g", "t", 3, 1), ("g", "t", 4, 1), ("g", "u", 0, -1)]
    plan, left_out = end_offsets_to_ask(committed, {("t", 0)}, lambda t, p: leaders[(t, p)],
                                        self_id=1, partitions_max=100)
    # t-0 is hosted here, t-4 has no leader, u-0 has no committed offset (-1)
    assert plan == {2: [("t", 1), ("t", 3)], 3: [("t", 2)]} and left_out == 0
    plan, left_out = end_offsets_to_ask(committed, set(), lambda t, p: leaders[(t, p)],
                                        self_id=1, partitions_max=2)
    assert plan == {2: [("t", 1)], 3: [("t", 2)]} and left_out == 1  # t-0: led here


def test_an_end_offset_learned_too_long_ago_is_dropped():
    from raftka.broker.groups.lag import fresh_end_offsets

    learned = {("t", 0): (10, 100.0), ("t", 1): (20, 69.0)}
    assert fresh_end_offsets(learned, now_s=100.0, max_age_s=30.0) == {("t", 0): 10}


def test_lag_uses_the_end_offsets_given_for_partitions_not_hosted():
    from raftka.broker.metrics import BrokerState

    class Image:
        topics: dict[str, object] = {}
        brokers: dict[int, object] = {}
        offset = 0

    metrics = BrokerMetrics()
    metrics.watch(BrokerState(
        broker_id=1, partitions=lambda: [], image=Image,
        is_controller=lambda: False, purgatory_size=lambda: 0, raft_status=dict,
        fenced=lambda: False, committed_offsets=lambda: [("g", "far", 3, 4)],
        end_offsets=lambda: {("far", 3): 9},
    ))
    key = "raftka_consumergroup_lag[('group', 'g'), ('partition', '3'), ('topic', 'far')]"
    assert samples(metrics)[key] == 5


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
