"""The Raft metadata quorum with real broker processes: formation, controller failover,
fencing, full restarts, isolation, stale controllers, bursts, observers."""

from __future__ import annotations

import concurrent.futures
import signal
import time

import grpc
import pytest

from raftka import Admin
from raftka.client.admin import NewTopic
from raftka.proto.raftka.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    broker_pb2,
    broker_pb2_grpc,
    common_pb2,
)
from tests.harness import LocalCluster, wait_for

pytestmark = pytest.mark.integration
Code = common_pb2.ErrorCode


def three_nodes(cluster_factory, settings: dict[str, str] | None = None) -> LocalCluster:
    cluster = cluster_factory(3, {"default.replication.factor": "3", **(settings or {})})
    cluster.start()
    cluster.wait_ready()
    return cluster


def topics_seen_by(cluster: LocalCluster, broker_id: int) -> dict[str, str]:
    """{topic name: topic id} in one broker's own metadata image."""
    with grpc.insecure_channel(cluster.brokers[broker_id].address) as channel:
        response = broker_pb2_grpc.BrokerServiceStub(channel).Metadata(
            broker_pb2.MetadataRequest(), timeout=5
        )
    return {t.name: t.topic_id for t in response.topics}


def offset_seen_by(cluster: LocalCluster, broker_id: int) -> int:
    return cluster.describe(via=broker_id).metadata_offset


def converged(cluster: LocalCluster) -> dict[str, str]:
    """Wait until every running broker has the same metadata; return its topics."""
    running = [i for i, b in cluster.brokers.items() if b.running]

    def same() -> dict[str, str] | None:
        offsets = {offset_seen_by(cluster, i) for i in running}
        views = [topics_seen_by(cluster, i) for i in running]
        if len(offsets) == 1 and all(v == views[0] for v in views):
            return views[0] or {"": ""}
        return None

    result = wait_for(same, 30, "all brokers to apply the same metadata")
    assert isinstance(result, dict)
    result.pop("", None)
    return result


def create_via(
    cluster: LocalCluster, broker_id: int, name: str, **kwargs: int
) -> admin_pb2.CreateTopicResult:
    with Admin(cluster.brokers[broker_id].address, request_timeout_ms=15_000) as admin:
        (result,) = admin.create_topics([NewTopic(name, **kwargs)])
    return result


def test_cluster_forms_with_one_controller_and_every_broker_unfenced(cluster_factory):
    cluster = three_nodes(cluster_factory)
    views = [cluster.describe(via=i) for i in (1, 2, 3)]
    assert len({v.controller_id for v in views}) == 1 and views[0].controller_id in (1, 2, 3)
    assert len({v.cluster_id for v in views}) == 1 and views[0].cluster_id
    assert all(not b.fenced and b.voter for b in views[0].brokers)
    result = create_via(cluster, 2, "spread", num_partitions=6, replication_factor=3)
    assert result.error_code == Code.NONE
    # Another broker learns of the topic within a Raft heartbeat or two (as in Kafka, metadata
    # reaches the brokers shortly after the controller committed it).
    with Admin(cluster.brokers[1].address) as admin:
        description = wait_for(lambda: admin.describe_topic("spread"), 5, "broker 1 to see it")
        leaders = [p.leader_id for p in description.partitions]
    assert sorted(leaders) == [1, 1, 2, 2, 3, 3]
    assert "spread" in converged(cluster)


def test_killing_the_controller_elects_another_and_admin_keeps_working(cluster_factory):
    cluster = three_nodes(cluster_factory)
    controller = cluster.describe().controller_id
    cluster.brokers[controller].kill()
    survivors = [i for i in (1, 2, 3) if i != controller]

    def new_controller() -> int:
        found = cluster.describe(via=survivors[0]).controller_id
        return found if found not in (-1, controller) else 0

    wait_for(new_controller, 15, "a new controller")
    for i, broker_id in enumerate(survivors):
        # RF 2 asked for: the default (3) is refused while a broker of three is down.
        created = create_via(cluster, broker_id, f"after-{i}", replication_factor=2)
        assert created.error_code == Code.NONE, created.error_message
    topics = converged(cluster)
    assert {"after-0", "after-1"} <= set(topics)


def test_killed_broker_is_fenced_then_unfenced_after_restart(cluster_factory):
    cluster = three_nodes(cluster_factory, {"broker.session.timeout.ms": "2000"})
    create_via(cluster, 1, "led", num_partitions=3, replication_factor=3)
    controller = cluster.describe().controller_id
    victim = next(i for i in (1, 2, 3) if i != controller)
    cluster.brokers[victim].kill()
    killed_at = time.monotonic()

    def fenced() -> bool:
        brokers = {b.endpoint.broker_id: b for b in cluster.describe(via=controller).brokers}
        return brokers[victim].fenced

    wait_for(fenced, 10, f"broker {victim} to be fenced")
    fenced_after = time.monotonic() - killed_at
    assert fenced_after < 10
    # The controller's own image (not Admin's, which may ask a broker a few ms behind): the
    # fence and the leadership/ISR moves are one metadata batch, so seeing one means both.
    with cluster.brokers[controller].channel() as channel:
        (description,) = admin_pb2_grpc.AdminServiceStub(channel).DescribeTopics(
            admin_pb2.DescribeTopicsRequest(names=["led"]), timeout=5
        ).topics
    assert all(p.leader_id != victim and victim not in p.isr for p in description.partitions)
    cluster.brokers[victim].start()
    cluster.wait_ready([victim])
    brokers = {b.endpoint.broker_id: b for b in cluster.describe(via=controller).brokers}
    assert not brokers[victim].fenced


def test_metadata_survives_a_full_restart(cluster_factory):
    cluster = three_nodes(cluster_factory)
    for name in ("alpha", "beta", "gamma"):
        assert create_via(cluster, 1, name, num_partitions=2).error_code == Code.NONE
    with Admin(cluster.bootstrap) as admin:
        admin.delete_topic("beta")
    before = converged(cluster)
    for broker in cluster.brokers.values():
        assert broker.stop() == 0
    cluster.start()
    cluster.wait_ready()
    after = converged(cluster)
    assert after == before and set(after) == {"alpha", "gamma"}


def test_broker_cut_off_from_the_majority_cannot_commit_metadata(cluster_factory):
    cluster = three_nodes(cluster_factory)
    controller = cluster.describe().controller_id
    others = [i for i in (1, 2, 3) if i != controller]
    for i in others:
        cluster.brokers[i].signal(signal.SIGSTOP)
    try:
        time.sleep(1.5)  # past leaderFallbackTimeout: the lone leader steps down
        result = create_via(cluster, controller, "lonely")
        assert result.error_code in (Code.NOT_CONTROLLER, Code.REQUEST_TIMED_OUT)
        assert "lonely" not in topics_seen_by(cluster, controller)
    finally:
        for i in others:
            cluster.brokers[i].signal(signal.SIGCONT)
    cluster.wait_ready()
    assert "lonely" not in converged(cluster)
    assert create_via(cluster, others[0], "together").error_code == Code.NONE


def test_a_stale_controller_cannot_write(cluster_factory):
    cluster = three_nodes(cluster_factory)
    old = cluster.describe().controller_id
    cluster.brokers[old].signal(signal.SIGSTOP)
    others = [i for i in (1, 2, 3) if i != old]
    try:
        wait_for(
            lambda: cluster.describe(via=others[0]).controller_id not in (-1, old),
            15,
            "a new controller",
        )
        assert create_via(cluster, others[0], "contested").error_code == Code.NONE
    finally:
        cluster.brokers[old].signal(signal.SIGCONT)
    # The old controller, just woken, is asked directly (as if it were still in charge).
    request = admin_pb2.CreateTopicsRequest(
        topics=[admin_pb2.NewTopic(name="contested"), admin_pb2.NewTopic(name="sneaky")]
    )
    with grpc.insecure_channel(cluster.brokers[old].address) as channel:
        reply = admin_pb2_grpc.AdminServiceStub(channel).CreateTopics(
            request,
            timeout=15,
            metadata=cluster.internal_metadata(
                "/raftka.v1.AdminService/CreateTopics", (("x-raftka-forwarded", "test"),)
            ),
        )
    codes = {t.name: t.error_code for t in reply.topics}
    assert codes["contested"] in (
        Code.NOT_CONTROLLER,
        Code.REQUEST_TIMED_OUT,
        Code.TOPIC_ALREADY_EXISTS,
    )
    topics = converged(cluster)
    assert "contested" in topics
    if codes["sneaky"] != Code.NONE:
        assert "sneaky" not in topics


def test_bursts_of_metadata_writes_leave_every_node_identical(cluster_factory):
    # A small compaction threshold makes Raft snapshot (and ship snapshots) during the burst.
    cluster = three_nodes(cluster_factory, {"metadata.log.compaction.entries": "50"})
    with Admin(cluster.bootstrap, request_timeout_ms=60_000) as admin:
        results = admin.create_topics([NewTopic(f"bulk-{i}") for i in range(300)])
    assert all(r.error_code == Code.NONE for r in results)

    def create_one(i: int) -> int:
        return create_via(cluster, 1 + i % 3, f"burst-{i}").error_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        codes = list(pool.map(create_one, range(240)))
    assert codes.count(Code.NONE) == 240, codes
    topics = converged(cluster)
    assert len([t for t in topics if t.startswith(("bulk-", "burst-"))]) == 540
    # a restarted node rebuilds the same image from its snapshot and journal
    cluster.brokers[2].stop()
    cluster.brokers[2].start()
    cluster.wait_ready([2])
    assert converged(cluster) == topics


def test_a_fourth_broker_joins_as_an_observer_and_hosts_partitions(cluster_factory):
    cluster = cluster_factory(4, {"default.replication.factor": "1"}, voter_count=3)
    cluster.start()
    cluster.wait_ready()
    brokers = {b.endpoint.broker_id: b for b in cluster.describe().brokers}
    assert [brokers[i].voter for i in (1, 2, 3, 4)] == [True, True, True, False]
    assert create_via(cluster, 4, "wide", num_partitions=8).error_code == Code.NONE
    with Admin(cluster.brokers[4].address) as admin:
        leaders = {p.leader_id for p in admin.describe_topic("wide").partitions}
    assert 4 in leaders
    assert "wide" in converged(cluster)
    cluster.brokers[4].kill()  # losing an observer costs the quorum nothing
    assert create_via(cluster, 1, "still-fine").error_code == Code.NONE


def test_clients_cannot_create_internal_topics_through_a_forwarding_broker(cluster_factory):
    # Before: a broker forwarding a client's CreateTopics to the controller marked it
    # forwarded, and the controller let forwarded calls name internal topics.
    cluster = three_nodes(cluster_factory)
    controller = cluster.describe().controller_id
    for broker_id in (1, 2, 3):
        result = create_via(cluster, broker_id, "__consumer_offsets", num_partitions=1)
        assert result.error_code == Code.INVALID_REQUEST, (broker_id, broker_id == controller)
        assert "internal" in result.error_message
    assert "__consumer_offsets" not in topics_seen_by(cluster, controller)
