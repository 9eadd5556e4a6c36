"""A restarted broker acts on nothing it remembers until its new incarnation is registered:
it names itself leader of no partition it no longer leads, and followers may only fetch with
their current broker epoch (KIP-903).

Seen before the fix (in docker compose, containers killed and restarted): a restarted broker's
Metadata named itself leader of partitions it no longer led for 0.3-1 s, and it served
replica fetches from its old log in that window."""

from __future__ import annotations

import time

import grpc
import pytest

from raftka import Admin, Producer
from raftka.proto.raftka.v1 import broker_pb2, broker_pb2_grpc, common_pb2
from tests.harness import LocalCluster, wait_for
from tests.integration.test_replication import SETTINGS, partition_state, wait_isr

pytestmark = [pytest.mark.integration, pytest.mark.slow]
Code = common_pb2.ErrorCode
PARTITIONS = 6


def leaders(cluster: LocalCluster, via: int) -> dict[int, tuple[int, int]]:
    """partition -> (leader, leader epoch) as broker `via` answers Metadata now."""
    with grpc.insecure_channel(cluster.brokers[via].address) as channel:
        reply = broker_pb2_grpc.BrokerServiceStub(channel).Metadata(
            broker_pb2.MetadataRequest(topics=["claims"]), timeout=2
        )
    return {p.partition: (p.leader_id, p.leader_epoch) for t in reply.topics
            for p in t.partitions}


def test_a_restarted_leader_claims_no_leadership_it_lost(cluster_factory):
    cluster = cluster_factory(3, {**SETTINGS, "leader.imbalance.check.interval.ms": "600000"})
    cluster.start()
    cluster.wait_ready()
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("claims", num_partitions=PARTITIONS)
    with Producer(cluster.bootstrap, acks="all") as producer:
        for i in range(60):
            producer.send("claims", str(i).encode(), partition=i % PARTITIONS)
        producer.flush()
    victim = partition_state(cluster, "claims", 0).leader_id
    witness = next(i for i in (1, 2, 3) if i != victim)
    led = [p for p, (leader, _) in leaders(cluster, witness).items() if leader == victim]
    cluster.brokers[victim].kill()

    def moved() -> dict[int, tuple[int, int]] | None:
        now = leaders(cluster, witness)
        return now if all(now[p][0] not in (victim, -1) for p in led) else None

    current = wait_for(moved, 30, "new leaders for the victim's partitions")
    assert isinstance(current, dict)
    cluster.brokers[victim].start()
    stale: list[tuple[int, int, int]] = []
    answers = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not cluster.brokers[victim].serving():
        try:
            seen = leaders(cluster, victim)
        except grpc.RpcError:
            continue  # not listening yet
        answers += 1
        stale += [(p, leader, epoch) for p, (leader, epoch) in seen.items()
                  if leader == victim and epoch < current[p][1]]
    assert answers > 0, "the restarted broker never answered Metadata before serving"
    assert not stale, f"the restarted broker claimed leadership it had lost: {stale}"
    cluster.wait_ready()
    for partition in range(PARTITIONS):
        wait_isr(cluster, "claims", {1, 2, 3}, partition)


def test_a_follower_fetch_with_a_stale_broker_epoch_is_refused(cluster_factory):
    cluster = cluster_factory(3, SETTINGS)
    cluster.start()
    cluster.wait_ready()
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("epochs", num_partitions=1)
    state = partition_state(cluster, "epochs", 0)
    follower = next(r for r in state.replicas if r != state.leader_id)
    request = broker_pb2.FetchRequest(
        replica_id=follower,
        replica_broker_epoch=0,  # older than any registration in this cluster
        max_wait_ms=0,
        partitions=[broker_pb2.FetchPartition(topic="epochs", partition=0, fetch_offset=0,
                                              current_leader_epoch=state.leader_epoch)],
    )
    with grpc.insecure_channel(cluster.brokers[state.leader_id].address) as channel:
        reply = broker_pb2_grpc.BrokerServiceStub(channel).Fetch(
            request, timeout=10,
            metadata=cluster.internal_metadata("/raftka.v1.BrokerService/Fetch",
                                               broker_id=follower),
        )
    assert reply.partitions[0].error_code == Code.STALE_BROKER_EPOCH, reply
