"""A topic's description carries every partition's offsets, also those led by brokers other
than the one asked: the client asks each leader once for all of its partitions (it made two
calls per partition, ~1,300 in a row for a 1,000-partition topic page)."""

from __future__ import annotations

import grpc
import pytest

from raftka import Admin
from raftka.proto.raftka.v1 import broker_pb2, broker_pb2_grpc, common_pb2
from tests.harness import wait_for

pytestmark = [pytest.mark.integration]
PARTITIONS = 9


def test_offsets_of_partitions_led_elsewhere_are_filled_in(cluster_factory):
    cluster = cluster_factory(3, {"default.replication.factor": "3"})
    cluster.start()
    cluster.wait_ready()
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("spread", num_partitions=PARTITIONS, replication_factor=3)
        wait_for(lambda: all(p.leader_id > 0 for p in admin.describe_topic("spread").partitions),
                 15, "leaders for every partition")
        leaders = {p.partition: p.leader_id for p in admin.describe_topic("spread").partitions}
    assert len(set(leaders.values())) == 3
    for partition, leader in leaders.items():
        with grpc.insecure_channel(cluster.brokers[leader].address) as channel:
            reply = broker_pb2_grpc.BrokerServiceStub(channel).Produce(
                broker_pb2.ProduceRequest(acks=-1, timeout_ms=10_000, partitions=[
                    broker_pb2.PartitionProduceData(
                        topic="spread", partition=partition,
                        records=[common_pb2.Record(value=b"v")] * (partition + 1))]),
                timeout=20)
        assert reply.partitions[0].error_code == 0
    with Admin(cluster.brokers[1].address) as admin:  # leads only a third of them
        described = admin.describe_topic("spread")
    assert {p.partition: p.high_watermark for p in described.partitions} == {
        i: i + 1 for i in range(PARTITIONS)}
    assert all(p.log_start_offset == 0 for p in described.partitions)
