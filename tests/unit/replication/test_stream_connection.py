"""The replication stream end to end on a real socket: the leader's listener (with a stand-in
for FetchPath) and the follower's connection. Batches arrive byte for byte, slices are
always closed, refused or misbehaving peers get nothing, and a cancelled fetch leaves no
half-read connection behind."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from raftka.broker.internal_auth import InternalAuth
from raftka.broker.log.file_slice import FileSlice
from raftka.broker.replication import stream_wire as wire
from raftka.broker.replication.stream_client import StreamDialer, StreamRefusedError
from raftka.broker.replication.stream_server import ReplicationListener
from raftka.cluster.cluster_auth import ClusterCredentials
from raftka.proto.raftka.v1 import broker_pb2

SECRET = b"s" * 32
BIG = os.urandom(300_000)  # goes by sendfile
SMALL = b"small batch bytes"  # read and written inline


class StandInFetchPath:
    """Answers every fetch with two partitions whose batches lie in a file; `hold` makes the
    fetch long-poll until released."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "segment.log"
        self.path.write_bytes(BIG + SMALL)
        self.asked: list[broker_pb2.FetchRequest] = []
        self.slices: list[FileSlice] = []
        self.hold = False

    async def fetch_slices(self, request: broker_pb2.FetchRequest, session=None):
        self.asked.append(request)
        if self.hold:
            await asyncio.sleep(60)
        response = broker_pb2.FetchResponse()
        for name in ("a", "b", "c"):
            response.partitions.add(topic=name, partition=0, high_watermark=5)
        fd = os.open(self.path, os.O_RDONLY)
        big = FileSlice(os.dup(fd), 0, len(BIG))
        small = FileSlice(fd, len(BIG), len(SMALL))
        self.slices += [big, small]
        return response, {0: big, 2: small}


def request(replica_id: int = 2) -> broker_pb2.FetchRequest:
    return broker_pb2.FetchRequest(replica_id=replica_id, max_wait_ms=0,
                                   partitions=[broker_pb2.FetchPartition(topic="a")])


async def serve(fetch_path: StandInFetchPath) -> ReplicationListener:
    listener = ReplicationListener(fetch_path, InternalAuth(ClusterCredentials(SECRET), 1),  # type: ignore[arg-type]
                                   "127.0.0.1", 0)
    await listener.start()
    return listener


def dialer(secret: bytes | None, broker_id: int = 2) -> StreamDialer:
    auth = InternalAuth(ClusterCredentials(secret) if secret else None, broker_id)
    return StreamDialer(broker_id, auth, lambda _: None)


def test_batches_arrive_byte_for_byte_and_slices_are_closed(tmp_path):
    async def scenario() -> None:
        fetch_path = StandInFetchPath(tmp_path)
        listener = await serve(fetch_path)
        connection = dialer(SECRET).connection("127.0.0.1", listener.port)
        try:
            for _ in range(3):  # one connection, reused
                response = await connection.fetch(lambda _session: request(), 5)
                batches = [p.record_batches for p in response.partitions]
                assert batches == [BIG, b"", SMALL]
                assert response.partitions[0].high_watermark == 5
            assert len(fetch_path.asked) == 3
            assert all(found._closed for found in fetch_path.slices)
        finally:
            connection.close()
            await listener.stop()

    asyncio.run(scenario())


def test_a_follower_with_another_secret_is_refused_and_asks_nothing(tmp_path):
    async def scenario() -> None:
        fetch_path = StandInFetchPath(tmp_path)
        listener = await serve(fetch_path)
        try:
            for secret in (b"o" * 32, None):
                connection = dialer(secret).connection("127.0.0.1", listener.port)
                with pytest.raises(StreamRefusedError):
                    await connection.fetch(lambda _session: request(), 5)
                assert not connection.connected
            assert fetch_path.asked == []
        finally:
            await listener.stop()

    asyncio.run(scenario())


def test_a_fetch_for_another_replica_or_a_consumer_closes_the_connection(tmp_path):
    async def scenario() -> None:
        fetch_path = StandInFetchPath(tmp_path)
        listener = await serve(fetch_path)
        try:
            for replica_id in (3, -1):
                connection = dialer(SECRET).connection("127.0.0.1", listener.port)
                with pytest.raises(asyncio.IncompleteReadError):
                    await connection.fetch(lambda _session, r=replica_id: request(r), 5)
                assert not connection.connected
            assert fetch_path.asked == []
        finally:
            await listener.stop()

    asyncio.run(scenario())


def test_an_oversized_request_closes_the_connection(tmp_path):
    async def scenario() -> None:
        fetch_path = StandInFetchPath(tmp_path)
        listener = await serve(fetch_path)
        connection = dialer(SECRET).connection("127.0.0.1", listener.port)
        try:
            await connection.connect()
            reader, writer = connection._reader, connection._writer
            assert reader is not None and writer is not None
            writer.write(wire.REQUEST_PREFIX.pack(wire.FETCH_REQUEST_MAX_BYTES + 1))
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing sent
            assert fetch_path.asked == []
        finally:
            connection.close()
            await listener.stop()

    asyncio.run(scenario())


def test_a_fetch_without_a_session_on_a_session_connection_closes_it(tmp_path):
    """A follower that started a fetch session and then sends a full request is confused
    about what the leader has told it: answering would mix the two bookkeepings, so the
    leader closes the connection and both sides start over."""
    async def scenario() -> None:
        fetch_path = StandInFetchPath(tmp_path)
        listener = await serve(fetch_path)
        connection = dialer(SECRET).connection("127.0.0.1", listener.port)

        def with_session(_session) -> broker_pb2.FetchRequest:
            asked = request()
            asked.session = True
            return asked

        try:
            response = await connection.fetch(with_session, 5)
            assert response.partitions[0].record_batches == BIG
            with pytest.raises(asyncio.IncompleteReadError):
                await connection.fetch(lambda _session: request(), 5)
            assert not connection.connected
            assert len(fetch_path.asked) == 1  # the full request was never served
            response = await connection.fetch(lambda _session: request(), 5)  # a new connection
            assert response.partitions[0].record_batches == BIG
            assert len(fetch_path.asked) == 2
        finally:
            connection.close()
            await listener.stop()

    asyncio.run(scenario())


def test_a_cancelled_fetch_closes_the_connection_and_the_next_one_reconnects(tmp_path):
    async def scenario() -> None:
        fetch_path = StandInFetchPath(tmp_path)
        listener = await serve(fetch_path)
        connection = dialer(SECRET).connection("127.0.0.1", listener.port)
        try:
            fetch_path.hold = True
            pending = asyncio.create_task(connection.fetch(lambda _session: request(), 30))
            while not fetch_path.asked:
                await asyncio.sleep(0.01)
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
            assert not connection.connected  # its framing is unknown: not reused
            fetch_path.hold = False
            response = await connection.fetch(lambda _session: request(), 5)
            assert response.partitions[0].record_batches == BIG
        finally:
            connection.close()
            await listener.stop()

    asyncio.run(scenario())


def test_a_leader_whose_stream_port_is_unreachable_is_fetched_from_over_grpc():
    import grpc

    from raftka.broker.controller_client import ChannelPool
    from raftka.broker.partition import TopicPartition
    from raftka.broker.replication.fetcher import FetcherManager
    from raftka.proto.raftka.v1 import broker_pb2_grpc
    from tests.unit.replication.test_leader_fetcher import FakePartition, Leader, free_port

    async def scenario() -> list[set[str]]:
        leader = Leader()
        server = grpc.aio.server()
        broker_pb2_grpc.add_BrokerServiceServicer_to_server(leader, server)
        port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
        await server.start()
        channels = ChannelPool()
        closed_port = free_port()  # nothing listens there: connections are refused

        async def on_writer(fn, *args):
            return fn(*args)

        manager = FetcherManager(
            broker_id=2, channels=channels, endpoint_of=lambda _: f"127.0.0.1:{port}",
            on_writer=on_writer, clock_ms=lambda: 0, broker_epoch=lambda: 1,
            notify=lambda tp: None,
            streams=StreamDialer(2, InternalAuth(None, 2), lambda _: ("127.0.0.1", closed_port)))
        try:
            manager.follow(FakePartition(TopicPartition("a", 0)), 1)  # type: ignore[arg-type]
            await asyncio.wait_for(leader.seen.wait(), 10)
            return leader.asked
        finally:
            await manager.close()
            await channels.close()
            await server.stop(0)

    assert asyncio.run(scenario()) == [{"a-0"}]


def test_stopping_the_listener_with_followers_connected_logs_no_error(tmp_path, caplog):
    """A clean shutdown cancels the connections' tasks; asyncio's stream protocol then asked
    the cancelled task for its exception and logged an ERROR traceback per connection."""
    async def scenario() -> None:
        fetch_path = StandInFetchPath(tmp_path)
        listener = await serve(fetch_path)
        connection = dialer(SECRET).connection("127.0.0.1", listener.port)
        try:
            await connection.fetch(lambda _session: request(), 5)  # connected, then idle
            await listener.stop()
            for _ in range(5):
                await asyncio.sleep(0)  # the protocol's done-callbacks run
        finally:
            connection.close()

    with caplog.at_level("ERROR", logger="asyncio"):
        asyncio.run(scenario())
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []
