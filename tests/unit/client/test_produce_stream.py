"""The SDK's ProduceStream against a real gRPC server on a loopback socket: answers matched
by correlation id whatever their order, a silent broker cancelled at the deadline, a broken
stream failing what was in flight as retriable, and a broker without the RPC remembered so
the producer falls back to unary Produce."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from raftka.client.errors import BrokerNotAvailableError, RequestTimedOutError
from raftka.client.produce_stream import (
    UNARY_FOR_S,
    ProduceStream,
    ProduceStreams,
    StreamReply,
)
from raftka.client.transport import Connections
from raftka.proto.raftka.v1 import broker_pb2, broker_pb2_grpc
from tests.harness import free_port_block

WAIT_S = 10.0


def request(partition: int) -> broker_pb2.ProduceRequest:
    return broker_pb2.ProduceRequest(acks=-1, partitions=[
        broker_pb2.PartitionProduceData(topic="t", partition=partition)])


def answer(to: broker_pb2.ProduceRequest) -> broker_pb2.ProduceResponse:
    """Names the request it answers: base_offset is 100 x its partition."""
    item = to.partitions[0]
    return broker_pb2.ProduceResponse(
        correlation_id=to.correlation_id,
        partitions=[broker_pb2.PartitionProduceResponse(
            topic=item.topic, partition=item.partition, base_offset=100 * item.partition)])


class Broker(broker_pb2_grpc.BrokerServiceServicer):
    """`mode`: "reverse" answers each pair of requests second first; "silent" never
    answers; "end" ends the stream after the first request, unanswered; "too-large" and
    "unauthenticated" end it with that status after the first request."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.streams = 0

    def ProduceStream(self, requests: Iterator[broker_pb2.ProduceRequest],
                      context: Any) -> Iterator[broker_pb2.ProduceResponse]:
        self.streams += 1
        held: list[broker_pb2.ProduceRequest] = []
        for item in requests:
            if self.mode == "end":
                return
            if self.mode == "too-large":
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "message over the limit")
            if self.mode == "unauthenticated":
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "wrong password")
            if self.mode == "silent":
                continue
            held.append(item)
            if len(held) == 2:
                yield answer(held[1])
                yield answer(held[0])
                held = []


class NoStreamBroker(broker_pb2_grpc.BrokerServiceServicer):
    """An older broker: ProduceStream is UNIMPLEMENTED (the generated base class's answer)."""


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[grpc.Server] = []

    def start(servicer: broker_pb2_grpc.BrokerServiceServicer) -> str:
        port = free_port_block(1)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        broker_pb2_grpc.add_BrokerServiceServicer_to_server(servicer, server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(grace=None)


class Replies:
    """Callbacks that keep each request's reply, with an event per request."""

    def __init__(self) -> None:
        self.got: dict[str, StreamReply] = {}
        self._events: dict[str, threading.Event] = {}

    def callback(self, name: str) -> Any:
        event = self._events.setdefault(name, threading.Event())

        def arrived(reply: StreamReply) -> None:
            self.got[name] = reply
            event.set()

        return arrived

    def wait(self, *names: str) -> None:
        for name in names:
            assert self._events[name].wait(WAIT_S), f"no reply for {name}"


def test_answers_in_another_order_reach_the_request_they_answer(serve):
    address = serve(Broker("reverse"))
    connections = Connections()
    stream = ProduceStream(address, connections.broker(address), deadline_s=30)
    replies = Replies()
    try:
        assert stream.send(request(1), replies.callback("first"))
        assert stream.send(request(2), replies.callback("second"))
        replies.wait("first", "second")
        assert replies.got["first"].result().partitions[0].base_offset == 100
        assert replies.got["second"].result().partitions[0].base_offset == 200
        assert stream.alive
    finally:
        stream.close()
        connections.close()


def test_a_request_past_its_deadline_cancels_the_stream_and_fails_what_was_in_flight(serve):
    address = serve(Broker("silent"))
    connections = Connections()
    now = [0.0]
    stream = ProduceStream(address, connections.broker(address), deadline_s=5,
                           clock=lambda: now[0])
    replies = Replies()
    try:
        stream.send(request(1), replies.callback("old"))
        now[0] = 3.0
        stream.send(request(2), replies.callback("young"))
        stream.expire()  # the oldest is 3 s old: not yet
        now[0] = 5.5
        stream.expire()
        replies.wait("old", "young")
        for name in ("old", "young"):
            with pytest.raises(RequestTimedOutError, match="did not answer a Produce"):
                replies.got[name].result()
        assert not stream.alive
        assert not stream.send(request(3), replies.callback("late"))  # a new one is needed
    finally:
        stream.close()
        connections.close()


def test_a_stream_the_broker_ends_fails_its_requests_as_retriable(serve):
    address = serve(Broker("end"))
    connections = Connections()
    stream = ProduceStream(address, connections.broker(address), deadline_s=30)
    replies = Replies()
    try:
        stream.send(request(1), replies.callback("lost"))
        replies.wait("lost")
        with pytest.raises(BrokerNotAvailableError) as failure:
            replies.got["lost"].result()
        assert failure.value.retriable
    finally:
        stream.close()
        connections.close()


def test_a_dead_stream_is_replaced_on_the_next_send(serve):
    broker = Broker("end")
    address = serve(broker)
    connections = Connections()
    streams = ProduceStreams(connections, deadline_s=30)
    replies = Replies()
    try:
        assert streams.send(address, request(1), replies.callback("lost"))
        replies.wait("lost")
        broker.mode = "reverse"
        assert streams.send(address, request(1), replies.callback("a"))
        assert streams.send(address, request(2), replies.callback("b"))
        replies.wait("a", "b")
        assert replies.got["b"].result().partitions[0].base_offset == 200
        assert broker.streams == 2
    finally:
        streams.close()
        connections.close()


def test_a_broker_without_produce_stream_is_sent_unary_calls_after_the_first_try(serve):
    address = serve(NoStreamBroker())
    connections = Connections()
    streams = ProduceStreams(connections, deadline_s=30)
    replies = Replies()
    try:
        # The broker refuses the call as it opens, maybe before the request is queued on
        # it: then the stream is known dead at once and send() already says "unary".
        if streams.send(address, request(1), replies.callback("first")):
            replies.wait("first")
            with pytest.raises(BrokerNotAvailableError, match="no ProduceStream") as failure:
                replies.got["first"].result()
            assert failure.value.retriable  # the producer retries it, as a unary call
        assert not streams.send(address, request(1), replies.callback("again"))
        assert not streams.send(address, request(2), replies.callback("later"))
    finally:
        streams.close()
        connections.close()


def test_a_failure_one_request_may_have_caused_sends_unary_calls_for_a_while(serve):
    """RESOURCE_EXHAUSTED ends the stream for every request on it: they are retried as
    unary calls, where only the one at fault fails; streams come back after UNARY_FOR_S."""
    broker = Broker("too-large")
    address = serve(broker)
    connections = Connections()
    now = [0.0]
    streams = ProduceStreams(connections, deadline_s=30, clock=lambda: now[0])
    replies = Replies()
    try:
        assert streams.send(address, request(1), replies.callback("culprit"))
        replies.wait("culprit")
        with pytest.raises(BrokerNotAvailableError, match="RESOURCE_EXHAUSTED") as failure:
            replies.got["culprit"].result()
        assert failure.value.retriable
        assert not streams.send(address, request(1), replies.callback("unary"))
        now[0] = UNARY_FOR_S + 1
        broker.mode = "reverse"
        assert streams.send(address, request(1), replies.callback("a"))
        assert streams.send(address, request(2), replies.callback("b"))
        replies.wait("a", "b")
        assert replies.got["a"].result().partitions[0].base_offset == 100
    finally:
        streams.close()
        connections.close()


def test_refused_credentials_reach_the_producer_as_the_unary_call_would_report_them(serve):
    address = serve(Broker("unauthenticated"))
    connections = Connections()
    streams = ProduceStreams(connections, deadline_s=30)
    replies = Replies()
    try:
        streams.send(address, request(1), replies.callback("refused"))
        replies.wait("refused")
        with pytest.raises(grpc.RpcError) as failure:
            replies.got["refused"].result()
        assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # not a reason to switch to unary calls: the next request tries a stream again
        assert streams.send(address, request(2), replies.callback("again"))
    finally:
        streams.close()
        connections.close()


def test_a_callback_that_raises_does_not_keep_the_others_from_their_failure(serve):
    address = serve(Broker("silent"))
    connections = Connections()
    now = [0.0]
    stream = ProduceStream(address, connections.broker(address), deadline_s=5,
                           clock=lambda: now[0])
    replies = Replies()

    def broken(reply: StreamReply) -> None:
        raise RuntimeError("a bug in a callback")

    try:
        stream.send(request(1), broken)
        stream.send(request(2), replies.callback("second"))
        now[0] = 6.0
        stream.expire()
        replies.wait("second")
        with pytest.raises(RequestTimedOutError):
            replies.got["second"].result()
    finally:
        stream.close()
        connections.close()
