"""ProduceStream on a real broker: a stream's requests are appended in the order sent even
when many are in flight, every request is answered with its correlation id, and a bad
request is answered with its error while the stream goes on."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator

import grpc
import pytest

from raftka import Admin
from raftka.proto.raftka.v1 import broker_pb2, broker_pb2_grpc, common_pb2
from raftka.records import encode_batch
from tests.integration.test_single_broker import read_all

pytestmark = pytest.mark.integration
Code = common_pb2.ErrorCode
IN_FLIGHT = 40


def now() -> int:
    return int(time.time() * 1000)


def data(value: bytes, **identity: int) -> bytes:
    return encode_batch([(None, value, [], 0)], now_ms=now(), **identity)


def produce(topic: str, batch: bytes, correlation_id: int, partition: int = 0,
            acks: int = -1) -> broker_pb2.ProduceRequest:
    return broker_pb2.ProduceRequest(
        acks=acks, timeout_ms=10_000, correlation_id=correlation_id, partitions=[
            broker_pb2.PartitionProduceData(topic=topic, partition=partition,
                                            record_batches=batch)])


@pytest.fixture
def service(broker) -> Iterator[broker_pb2_grpc.BrokerServiceStub]:
    """A stub on the one broker's gRPC port; its channel closed after the test."""
    channel = grpc.insecure_channel(broker.brokers[1].address)
    try:
        yield broker_pb2_grpc.BrokerServiceStub(channel)
    finally:
        channel.close()


def test_requests_in_flight_on_one_stream_are_appended_in_the_order_sent(broker, service):
    """Forty idempotent batches of one partition sent without waiting: a broker that
    appended them out of order would refuse the sequence gaps and store them shuffled."""
    Admin(broker.bootstrap).create_topic("ordered", 1, 1)
    identity = service.InitProducerId(broker_pb2.InitProducerIdRequest(), timeout=10)
    requests = [
        produce("ordered", data(b"%d" % i, producer_id=identity.producer_id,
                                producer_epoch=identity.producer_epoch, base_sequence=i),
                correlation_id=1000 + i)
        for i in range(IN_FLIGHT)
    ]
    # The iterator ends after the last request: the broker still answers all of them.
    answers = list(service.ProduceStream(iter(requests), timeout=30))
    by_id = {a.correlation_id: a.partitions[0] for a in answers}
    assert sorted(by_id) == [1000 + i for i in range(IN_FLIGHT)]
    assert [(by_id[1000 + i].error_code, by_id[1000 + i].base_offset)
            for i in range(IN_FLIGHT)] == [(Code.NONE, i) for i in range(IN_FLIGHT)]
    stored = read_all(broker.bootstrap, "ordered", expected=IN_FLIGHT)
    assert [r.value for r in stored[0]] == [b"%d" % i for i in range(IN_FLIGHT)]


def test_a_bad_request_on_a_stream_is_answered_and_the_stream_goes_on(broker, service):
    Admin(broker.bootstrap).create_topic("mixed", 1, 1)
    corrupt = bytearray(data(b"bad"))
    corrupt[-2] ^= 0xFF
    requests = [
        produce("mixed", bytes(corrupt), correlation_id=1),
        produce("mixed", data(b"x"), correlation_id=2, partition=7),
        produce("mixed", data(b"y"), correlation_id=3, acks=5),
        produce("mixed", data(b"good"), correlation_id=4),
    ]
    answers = {a.correlation_id: a.partitions[0]
               for a in service.ProduceStream(iter(requests), timeout=30)}
    assert {i: answers[i].error_code for i in answers} == {
        1: Code.CORRUPT_MESSAGE, 2: Code.UNKNOWN_TOPIC_OR_PARTITION,
        3: Code.INVALID_REQUIRED_ACKS, 4: Code.NONE}
    assert "acks must be" in answers[3].error_message
    assert answers[4].base_offset == 0
    stored = read_all(broker.bootstrap, "mixed", expected=1)
    assert [r.value for r in stored[0]] == [b"good"]


def test_a_stream_does_not_wait_for_a_topic_to_be_auto_created(broker, service):
    """A request for a missing topic starts its auto-creation and is answered at once with
    the retriable UNKNOWN_TOPIC_OR_PARTITION (as a Kafka broker answers a produce to a
    topic it does not have), so the stream's later requests, for other topics, are not held
    up behind a Raft commit and the metadata wait. The topic then exists, and a retry of
    the same request is stored. A name that cannot be a topic is refused as such, not
    "being created" for ever."""
    Admin(broker.bootstrap).create_topic("existing", 1, 1)
    requests = [
        produce("fresh", data(b"early"), correlation_id=1),
        produce("existing", data(b"other"), correlation_id=2),
        produce("bad name", data(b"never"), correlation_id=4),
    ]
    answers = {a.correlation_id: a.partitions[0]
               for a in service.ProduceStream(iter(requests), timeout=30)}
    assert answers[1].error_code == Code.UNKNOWN_TOPIC_OR_PARTITION
    assert "being created" in answers[1].error_message
    assert answers[2].error_code == Code.NONE
    assert answers[4].error_code == Code.INVALID_TOPIC_EXCEPTION  # not "being created"
    assert "bad name" in answers[4].error_message
    with Admin(broker.bootstrap) as admin:
        deadline = time.monotonic() + 30
        while "fresh" not in {t.name for t in admin.list_topics()}:
            assert time.monotonic() < deadline, "the auto-creation never happened"
            time.sleep(0.05)
    retried = service.ProduceStream(iter([produce("fresh", data(b"early"), correlation_id=3)]),
                                    timeout=30)
    assert [(a.correlation_id, a.partitions[0].error_code) for a in retried] == [
        (3, Code.NONE)]
    assert [r.value for r in read_all(broker.bootstrap, "fresh", expected=1)[0]] == [b"early"]


def test_a_stopping_broker_ends_its_produce_streams_itself(broker, service):
    """SIGTERM with a producer's stream open: the broker ends the stream (status OK) once
    what it took is answered, instead of leaving it to be cancelled when gRPC's shutdown
    grace runs out, which held every clean stop up by the grace period."""
    Admin(broker.bootstrap).create_topic("stopping", 1, 1)
    outbox: queue.SimpleQueue[broker_pb2.ProduceRequest | None] = queue.SimpleQueue()

    def requests() -> Iterator[broker_pb2.ProduceRequest]:
        while (item := outbox.get()) is not None:
            yield item

    call = service.ProduceStream(requests(), timeout=60)
    outbox.put(produce("stopping", data(b"before"), correlation_id=1))
    first = next(call)
    assert (first.correlation_id, first.partitions[0].error_code) == (1, Code.NONE)
    assert broker.brokers[1].stop() == 0
    try:
        rest = list(call)  # raises grpc.RpcError (CANCELLED) when the grace ran out
    finally:
        outbox.put(None)
    assert rest == []
