"""A follower's fetch loop picks up a partition it must now follow without waiting out the
long poll already in flight to that leader (an in-process gRPC server plays the leader)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

import grpc

from raftka.broker.controller_client import ChannelPool
from raftka.broker.partition import TopicPartition
from raftka.broker.replication.fetcher import FetcherManager
from raftka.proto.raftka.v1 import broker_pb2, broker_pb2_grpc, common_pb2

Code = common_pb2.ErrorCode
LONG_POLL_S = 60  # far longer than the test may take: only a cancelled poll ends sooner


class Log:
    def last_batch_epoch(self) -> int:
        return -1


@dataclass
class FakePartition:
    tp: TopicPartition
    leader_epoch: int = 1
    log_end_offset: int = 0
    log_start_offset: int = 0
    log: Log = field(default_factory=Log)


class Leader(broker_pb2_grpc.BrokerServiceServicer):
    """Holds every Fetch for LONG_POLL_S; records what each asked for."""

    def __init__(self) -> None:
        self.asked: list[set[str]] = []
        self.seen = asyncio.Event()

    async def Fetch(self, request, context):
        self.asked.append({f"{p.topic}-{p.partition}" for p in request.partitions})
        self.seen.set()
        await asyncio.sleep(LONG_POLL_S)
        return broker_pb2.FetchResponse(partitions=[
            broker_pb2.FetchPartitionResponse(topic=p.topic, partition=p.partition,
                                              error_code=Code.NOT_LEADER_OR_FOLLOWER)
            for p in request.partitions])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_partition_added_to_a_loop_cuts_its_long_poll_short():
    async def scenario() -> list[set[str]]:
        leader = Leader()
        server = grpc.aio.server()
        broker_pb2_grpc.add_BrokerServiceServicer_to_server(leader, server)
        port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
        await server.start()
        channels = ChannelPool()

        async def on_writer(fn, *args):
            return fn(*args)

        manager = FetcherManager(
            broker_id=2, channels=channels, endpoint_of=lambda _: f"127.0.0.1:{port}",
            on_writer=on_writer, clock_ms=lambda: 0, broker_epoch=lambda: 1,
            notify=lambda tp: None)
        try:
            manager.follow(FakePartition(TopicPartition("a", 0)), 1)  # type: ignore[arg-type]
            await asyncio.wait_for(leader.seen.wait(), 10)
            leader.seen.clear()
            manager.follow(FakePartition(TopicPartition("b", 0)), 1)  # type: ignore[arg-type]
            await asyncio.wait_for(leader.seen.wait(), 10)  # not LONG_POLL_S
            return leader.asked
        finally:
            await manager.close()
            await channels.close()
            await server.stop(0)

    asked = asyncio.run(scenario())
    assert asked == [{"a-0"}, {"a-0", "b-0"}]
