"""What `raftka watch` reports when the cluster changes."""

from __future__ import annotations

from raftka.client.cluster_view import (
    BrokerView,
    ClusterSnapshot,
    LeaderGaps,
    PartitionView,
    diff,
    render,
)


def snapshot(controller=1, fenced=(), leader=1, isr=(1, 2, 3), topics=("orders",)):
    brokers = tuple(
        BrokerView(i, f"127.0.0.1:{9080 + 10 * i}", i in fenced, True, 100 + i) for i in (1, 2, 3)
    )
    partitions = tuple(
        PartitionView(t, 0, leader, 0 if leader == 1 else 1, (1, 2, 3), isr) for t in topics
    )
    return ClusterSnapshot("cid", controller, 10, brokers, partitions)


def test_first_view_summarises_the_cluster():
    (line,) = diff(None, snapshot())
    assert "controller 1" in line and "3 broker(s)" in line


def test_controller_change_fencing_leader_and_isr_changes_are_reported():
    events = diff(snapshot(), snapshot(controller=3, fenced=(1,), leader=2, isr=(2, 3)))
    assert events == [
        "CONTROLLER is now broker 3 (was 1)",
        "BROKER 1 FENCED (missed heartbeats)",
        "LEADER of orders-0: broker 2 (was 1), epoch 1",
        "ISR of orders-0: [2,3] (was [1,2,3])",
    ]


def test_offline_partition_and_topic_lifecycle():
    events = diff(snapshot(), snapshot(leader=-1, topics=("orders", "new")))
    assert "LEADER of orders-0: NONE (offline) (was 1), epoch 1" in events
    assert "TOPIC new created" in events
    assert diff(snapshot(topics=("a", "b")), snapshot(topics=("a",))) == ["TOPIC b deleted"]


def test_no_change_no_events():
    assert diff(snapshot(), snapshot()) == []


def test_render_marks_the_controller_fenced_brokers_and_under_replication():
    text = render(snapshot(fenced=(2,), isr=(1, 3)), [(0.0, "BROKER 2 FENCED")])
    assert "controller" in text.splitlines()[3]
    assert "FENCED" in text and "(under-replicated)" in text and "Recent changes" in text


def test_json_contract_has_the_documented_keys():
    data = snapshot().to_json()
    assert set(data) >= {"controller", "brokers", "topics"}
    assert set(data["brokers"][0]) >= {"id", "fenced", "pid"}
    assert set(data["topics"][0]["partitions"][0]) == {
        "partition",
        "leader",
        "leader_epoch",
        "replicas",
        "isr",
    }


def test_the_watch_says_how_long_a_partition_was_without_a_leader():
    gaps = LeaderGaps(knows_pids=True)
    assert gaps.observe(snapshot(), 0.0) == []
    dead = snapshot()
    dead = ClusterSnapshot(dead.cluster_id, 1, 11, (
        BrokerView(1, "127.0.0.1:9090", False, True, None), *dead.brokers[1:]), dead.partitions)
    assert gaps.observe(dead, 1.0) == []  # broker 1's process is gone: the gap starts
    assert gaps.observe(snapshot(fenced=(1,), leader=-1), 1.3) == []
    assert gaps.observe(snapshot(leader=2), 1.64) == ["orders-0: leader 1 -> 2 after 640 ms"]
    assert gaps.observe(snapshot(leader=2), 3.0) == []  # reported once


def test_a_leader_change_with_no_gap_seen_reports_no_gap():
    gaps = LeaderGaps(knows_pids=False)
    gaps.observe(snapshot(), 0.0)
    assert gaps.observe(snapshot(leader=2), 0.25) == []  # a moved leader, never absent


def test_json_lists_every_listener_and_both_bootstraps():
    brokers = tuple(
        BrokerView(i, f"127.0.0.1:{9080 + 10 * i}", i == 3, True, 100 + i,
                   (("grpc", "PLAINTEXT", f"127.0.0.1:{9080 + 10 * i}"),
                    ("kafka", "PLAINTEXT", f"127.0.0.1:{9082 + 10 * i}")))
        for i in (1, 2, 3))
    data = ClusterSnapshot("cid", 1, 10, brokers, ()).to_json()
    assert data["brokers"][0]["kafka_address"] == "127.0.0.1:9092"
    assert data["brokers"][0]["listeners"][1] == {
        "protocol": "kafka", "name": "PLAINTEXT", "address": "127.0.0.1:9092"}
    assert data["bootstrap"] == {"grpc": "127.0.0.1:9090,127.0.0.1:9100",
                                 "kafka": "127.0.0.1:9092,127.0.0.1:9102"}
