"""The throughput chart's rates from brokers' /metrics texts, without a cluster."""

from __future__ import annotations

from raftka.client.console.throughput import ThroughputSeries, counter_totals


def text(records_in: int, bytes_in: int, bytes_out: int = 0, records_out: int = 0) -> str:
    return (
        "# TYPE kafka_server_brokertopicmetrics_messagesin counter\n"
        f'kafka_server_brokertopicmetrics_messagesin_total{{topic="a"}} {records_in - 1}\n'
        'kafka_server_brokertopicmetrics_messagesin_total{topic="b"} 1\n'
        "# TYPE kafka_server_brokertopicmetrics_bytesin counter\n"
        f'kafka_server_brokertopicmetrics_bytesin_total{{topic="a"}} {bytes_in}\n'
        "# TYPE kafka_server_brokertopicmetrics_bytesout counter\n"
        f'kafka_server_brokertopicmetrics_bytesout_total{{topic="a"}} {bytes_out}\n'
        "# TYPE raftka_brokertopicmetrics_messagesout counter\n"
        f'raftka_brokertopicmetrics_messagesout_total{{topic="a"}} {records_out}\n'
        "# TYPE kafka_server_replicamanager_leadercount gauge\n"
        "kafka_server_replicamanager_leadercount 7\n"
    )


def test_counters_are_summed_over_topics():
    assert counter_totals(text(10, 500, 300, 6)) == {
        "records_in": 10, "bytes_in": 500, "records_out": 6, "bytes_out": 300}


def test_rates_are_summed_over_brokers_and_need_two_scrapes():
    series = ThroughputSeries()
    assert series.add(1000, {"b1": text(10, 100), "b2": text(1, 0)}) is None
    point = series.add(3000, {"b1": text(30, 300, 200, 4), "b2": text(11, 100)})
    assert point is not None
    assert point.rates == {"records_in": 15.0, "bytes_in": 150.0, "records_out": 2.0,
                           "bytes_out": 100.0}
    assert series.to_json()[0]["ts_ms"] == 3000


def test_a_restarted_broker_counts_from_zero_and_a_silent_one_is_left_out():
    series = ThroughputSeries()
    series.add(0, {"b1": text(100, 0), "b2": text(10, 0)})
    point = series.add(1000, {"b1": text(4, 0), "b2": None})  # b1 restarted, b2 down
    assert point is not None and point.rates["records_in"] == 4.0
    assert series.add(2000, {"b1": text(6, 0), "b2": text(20, 0)}).rates["records_in"] == 2.0


def test_points_kept_are_bounded():
    series = ThroughputSeries(kept_max=3)
    for second in range(10):
        series.add(second * 1000, {"b": text(second * 5 + 1, 0)})
    assert [p["ts_ms"] for p in series.to_json()] == [7000, 8000, 9000]
