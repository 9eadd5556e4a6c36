"""acks=all means at least min.insync.replicas copies: with both followers of a partition
paused (the Raft majority kept, so the controller can shrink the ISR to the leader alone), an
acks=all write is refused with NOT_ENOUGH_REPLICAS(_AFTER_APPEND), never acknowledged, and
nothing is lost when the followers return. (Seen before the fix: acknowledged ~2 s later
with ISR = [leader].)"""

from __future__ import annotations

import signal

import grpc
import pytest

from raftka import Admin, Producer
from raftka.proto.raftka.v1 import broker_pb2, broker_pb2_grpc, common_pb2
from tests.harness import LocalCluster, wait_for
from tests.integration.test_replication import partition_state, read_partition, wait_isr

pytestmark = [pytest.mark.integration, pytest.mark.slow]
Code = common_pb2.ErrorCode
SETTINGS = {
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "broker.session.timeout.ms": "2000",
    "replica.lag.time.max.ms": "2000",
    "leader.imbalance.check.interval.ms": "600000",
}
REFUSED = {Code.NOT_ENOUGH_REPLICAS, Code.NOT_ENOUGH_REPLICAS_AFTER_APPEND}


def produce_one(cluster: LocalCluster, leader: int, topic: str, partition: int, value: bytes,
                timeout_ms: int) -> broker_pb2.PartitionProduceResponse:
    with grpc.insecure_channel(cluster.brokers[leader].address) as channel:
        reply = broker_pb2_grpc.BrokerServiceStub(channel).Produce(
            broker_pb2.ProduceRequest(
                acks=-1,
                timeout_ms=timeout_ms,
                partitions=[broker_pb2.PartitionProduceData(
                    topic=topic, partition=partition, records=[common_pb2.Record(value=value)]
                )],
            ),
            timeout=timeout_ms / 1000 + 10,
        )
    return reply.partitions[0]


def test_acks_all_is_refused_while_the_isr_is_below_min_insync(cluster_factory):
    cluster = cluster_factory(5, SETTINGS, voter_count=3)
    cluster.start()
    cluster.wait_ready()
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("guarded", num_partitions=10)
    # A partition whose followers hold at most one Raft voter: pausing both keeps a majority.
    chosen = None
    for index in range(10):
        state = partition_state(cluster, "guarded", index)
        followers = [r for r in state.replicas if r != state.leader_id]
        if sum(1 for f in followers if f <= 3) <= 1:
            chosen = (index, state.leader_id, followers)
            break
    assert chosen is not None, "no partition with followers outside the voter majority"
    index, leader, followers = chosen
    with Producer(cluster.bootstrap, acks="all") as producer:
        for i in range(10):
            producer.send("guarded", str(i).encode(), partition=index).get(30)
    for follower in followers:
        cluster.brokers[follower].signal(signal.SIGSTOP)
    try:
        replies = [produce_one(cluster, leader, "guarded", index, b"100", 8_000)]
        # Once the controller has shrunk the ISR to the leader, writes are refused up front.
        wait_for(lambda: set(partition_state(cluster, "guarded", index).isr) == {leader}, 20,
                 "the ISR to shrink to the leader")
        replies.append(produce_one(cluster, leader, "guarded", index, b"101", 8_000))
    finally:
        for follower in followers:
            cluster.brokers[follower].signal(signal.SIGCONT)
    for reply in replies:
        assert reply.error_code in REFUSED | {Code.REQUEST_TIMED_OUT}, reply
        assert reply.error_code != Code.NONE
    assert replies[-1].error_code in REFUSED, replies[-1]
    wait_isr(cluster, "guarded", set(followers) | {leader}, index)
    with Producer(cluster.bootstrap, acks="all") as producer:
        producer.send("guarded", b"11", partition=index).get(30)
    values = [int(v) for v in read_partition(cluster.bootstrap, "guarded", index)]
    # nothing acknowledged is lost; the refused writes may or may not be there (as in Kafka,
    # NOT_ENOUGH_REPLICAS_AFTER_APPEND leaves the record in the leader's log)
    assert [v for v in values if v < 100] == [*range(10), 11]
