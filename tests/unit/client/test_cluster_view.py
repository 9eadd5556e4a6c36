"""What `raftka watch` reports when the cluster changes."""

from __future__ import annotations

from types import SimpleNamespace

from raftka.client.cluster_view import (
    BrokerView,
    ClusterSnapshot,
    LeaderGaps,
    PartitionView,
    diff,
    render,
    snapshot_from,
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
        "BROKER 1 FENCED (by the controller)",
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


def described(*pids: int, fenced: tuple[int, ...] = ()) -> SimpleNamespace:
    """A DescribeClusterResponse's shape: brokers 1..N with the PIDs they registered."""
    brokers = [
        SimpleNamespace(
            endpoint=SimpleNamespace(broker_id=i, host=f"raftka-{i}", port=9090, kafka_port=0,
                                     grpc_listeners=[], kafka_listeners=[]),
            fenced=i in fenced, voter=True, pid=pid,
        )
        for i, pid in enumerate(pids, start=1)
    ]
    return SimpleNamespace(cluster_id="cid", controller_id=1, metadata_offset=5, brokers=brokers)


def test_brokers_in_containers_show_no_pid_not_pid_1():
    # every broker of the compose cluster is PID 1 of its own container
    view = snapshot_from(described(1, 1, 4242, fenced=(3,)), SimpleNamespace(topics=[]), None)
    assert [b.pid for b in view.brokers] == [None, None, None]
    assert [line.split()[-1] for line in render(view).splitlines()[3:6]] == ["-", "-", "-"]
    view = snapshot_from(described(4242, 4343), SimpleNamespace(topics=[]), None)
    assert [b.pid for b in view.brokers] == [4242, 4343]
    # a local cluster's own PID files win over what the brokers registered
    local = snapshot_from(described(1, 1), SimpleNamespace(topics=[]), {1: 77, 2: None})
    assert [b.pid for b in local.brokers] == [77, None]


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
