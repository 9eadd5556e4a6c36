"""The producer's sender against fake brokers: leader hints (KIP-951), backoff, and a broker
that never answers holding up only its own partitions."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from raftka.client import backoff
from raftka.client.producer import Producer
from raftka.proto.raftka.v1 import broker_pb2, common_pb2

Code = common_pb2.ErrorCode
A, B = "a.test:1", "b.test:1"
IDS = {A: 1, B: 2}


class Pending:
    """A gRPC future that completes when the test says so (or at once); result() blocks
    until then, as grpc's does."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[Any], None]] = []
        self._value: Any = None
        self._done = False
        self._event = threading.Event()
        self._lock = threading.Lock()

    def complete(self, value: Any) -> None:
        with self._lock:
            self._value, self._done = value, True
            callbacks = list(self._callbacks)
        self._event.set()
        for callback in callbacks:
            callback(self)

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        with self._lock:
            if not self._done:
                self._callbacks.append(callback)
                return
        callback(self)

    def result(self) -> Any:
        assert self._event.wait(30), "the test never completed this call"
        return self._value


class StreamCancelled(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.CANCELLED

    def details(self) -> str:
        return "cancelled by the client"


class FakeStreamCall:
    """A ProduceStream call on a FakeBroker: each request is answered as its unary
    `future()` would be (at once, or when the test completes it), tagged with its
    correlation id; iterating yields the answers as they come, as grpc's call does."""

    def __init__(self, broker: FakeBroker, requests: Any) -> None:
        self._answers: queue.SimpleQueue[Any] = queue.SimpleQueue()
        threading.Thread(target=self._take, args=(broker, requests), daemon=True).start()

    def _take(self, broker: FakeBroker, requests: Any) -> None:
        for request in requests:
            def answered(done: Pending, correlation_id: int = request.correlation_id) -> None:
                response = broker_pb2.ProduceResponse()
                response.CopyFrom(done.result())
                response.correlation_id = correlation_id
                self._answers.put(response)

            broker.future(request, timeout=0).add_done_callback(answered)

    def __iter__(self) -> FakeStreamCall:
        return self

    def __next__(self) -> broker_pb2.ProduceResponse:
        answer = self._answers.get()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def cancel(self) -> None:
        self._answers.put(StreamCancelled())


class FakeBroker:
    """Answers Metadata from the cluster's view and Produce by `answer(request)`; a broker
    with answer=None never answers."""

    def __init__(self, cluster: FakeCluster, address: str) -> None:
        self.cluster = cluster
        self.address = address
        self.produces: list[broker_pb2.ProduceRequest] = []
        self.metadata_calls = 0
        self.unanswered: list[tuple[Pending, broker_pb2.ProduceRequest]] = []
        self.answer: Callable[[broker_pb2.ProduceRequest], Any] | None = self.accept
        self.Produce = self

    def accept(self, request: broker_pb2.ProduceRequest) -> broker_pb2.ProduceResponse:
        return broker_pb2.ProduceResponse(partitions=[
            broker_pb2.PartitionProduceResponse(topic=p.topic, partition=p.partition,
                                                base_offset=len(self.produces))
            for p in request.partitions])

    def future(self, request: broker_pb2.ProduceRequest, timeout: float) -> Pending:
        self.produces.append(request)
        pending = Pending()
        if self.answer is not None:
            pending.complete(self.answer(request))
        else:
            self.unanswered.append((pending, request))
        return pending

    def ProduceStream(self, requests: Any) -> FakeStreamCall:
        return FakeStreamCall(self, requests)

    def Metadata(self, request: broker_pb2.MetadataRequest, timeout: float) -> Any:
        self.metadata_calls += 1
        return self.cluster.metadata()


class FakeCluster:
    """Topic t with partitions led by `leaders` (partition -> address), epoch 1."""

    def __init__(self, leaders: dict[int, str]) -> None:
        self.leaders = leaders
        self.brokers = {address: FakeBroker(self, address) for address in IDS}

    def metadata(self) -> broker_pb2.MetadataResponse:
        response = broker_pb2.MetadataResponse(cluster_id="c", controller_id=1)
        for address, broker_id in IDS.items():
            host, port = address.split(":")
            response.brokers.add(broker_id=broker_id, host=host, port=int(port))
        topic = response.topics.add(name="t")
        for partition, address in sorted(self.leaders.items()):
            topic.partitions.add(partition=partition, leader_id=IDS[address], leader_epoch=1,
                                 replicas=[1, 2], isr=[1, 2])
        return response

    def broker(self, address: str) -> FakeBroker:
        return self.brokers[address]

    def close(self) -> None:
        pass


def producer_on(cluster: FakeCluster, **kwargs: Any) -> Producer:
    producer = Producer(A, acks=1, linger_ms=0, seed=7, **kwargs)
    producer._connections = cluster  # type: ignore[assignment]
    producer.metadata._connections = cluster  # type: ignore[assignment]
    producer._streams._connections = cluster  # type: ignore[assignment]
    return producer


def test_a_not_leader_answer_with_the_new_leader_is_followed_without_a_metadata_call():
    cluster = FakeCluster({0: A})
    hinted = broker_pb2.ProduceResponse(
        partitions=[broker_pb2.PartitionProduceResponse(
            topic="t", partition=0, base_offset=-1, error_code=Code.NOT_LEADER_OR_FOLLOWER,
            leader_id=2, leader_epoch=2)],
        node_endpoints=[common_pb2.BrokerEndpoint(broker_id=2, host="b.test", port=1)])
    cluster.brokers[A].answer = lambda request: hinted
    with producer_on(cluster) as producer:
        producer.send("t", b"x", partition=0).get(timeout=10)
        assert cluster.brokers[A].metadata_calls == 1  # the first lookup of topic t only
        assert cluster.brokers[B].metadata_calls == 0
        assert len(cluster.brokers[B].produces) == 1
        assert producer.retries["NOT_LEADER_OR_FOLLOWER"] == 1
        producer.send("t", b"y", partition=0).get(timeout=10)  # now straight to b
        assert len(cluster.brokers[A].produces) == 1


def test_a_hint_no_newer_than_what_we_know_is_not_followed():
    """Two brokers that each name the other at the same epoch must not bounce a batch."""
    cluster = FakeCluster({0: A})
    answers = iter([
        broker_pb2.ProduceResponse(partitions=[broker_pb2.PartitionProduceResponse(
            topic="t", partition=0, base_offset=-1, error_code=Code.NOT_LEADER_OR_FOLLOWER,
            leader_id=2, leader_epoch=1)]),
    ])
    cluster.brokers[A].answer = lambda request: next(answers, None) or \
        cluster.brokers[A].accept(request)
    with producer_on(cluster) as producer:
        producer.send("t", b"x", partition=0).get(timeout=10)
    assert cluster.brokers[B].produces == []  # backed off, refreshed, retried at a


def test_a_broker_that_never_answers_holds_up_only_its_own_partitions():
    cluster = FakeCluster({0: A, 1: B})
    cluster.brokers[A].answer = None  # paused: the request stays in flight
    with producer_on(cluster, request_timeout_ms=60_000, delivery_timeout_ms=120_000) \
            as producer:
        stuck = producer.send("t", b"x", partition=0)
        for i in range(5):  # each waits for its ack before the next is sent
            producer.send("t", str(i).encode(), partition=1).get(timeout=10)
        assert not stuck.done()
        assert len(cluster.brokers[B].produces) == 5
        for pending, request in cluster.brokers[A].unanswered:  # it wakes up
            pending.complete(cluster.brokers[A].accept(request))
        stuck.get(timeout=10)


@pytest.mark.parametrize("attempt, low, high", [(1, 16, 24), (2, 32, 48), (3, 64, 96),
                                                 (4, 80, 100), (30, 80, 100)])
def test_backoff_doubles_from_tens_of_ms_with_jitter_and_a_cap(attempt, low, high):
    waits = [backoff.backoff_ms(attempt, u / 10) for u in range(10)]
    assert low <= min(waits) and max(waits) <= high
    assert len(set(waits)) > 1  # spread out


def test_backoff_limits_are_checked_at_start_up():
    with pytest.raises(ValueError, match="retry backoff"):
        Producer(A, retry_backoff_ms=0)
    with pytest.raises(ValueError, match="retry backoff"):
        Producer(A, retry_backoff_ms=50, retry_backoff_max_ms=10)


def test_send_many_delivers_in_order_with_one_result_for_all():
    cluster = FakeCluster({0: A, 1: B})
    with producer_on(cluster) as producer:
        result = producer.send_many("t", [b"a", b"b", b"c"], partition=1)
        metadata = result.get(timeout=10)
        assert [(m.partition, m.offset - metadata[0].offset) for m in metadata] == [
            (1, 0), (1, 1), (1, 2)]
        assert len(result) == 3 and result.done()
        request = cluster.brokers[B].produces[0]
        from raftka.records import decode_batches
        values = [r.value for r in decode_batches(request.partitions[0].record_batches)]
        assert values == [b"a", b"b", b"c"]


def test_send_many_with_keys_partitions_as_send_does_and_answers_in_input_order():
    from raftka.client.partitioner import partition_for_key

    cluster = FakeCluster({0: A, 1: B})
    keys = [b"k%d" % i for i in range(12)]
    with producer_on(cluster) as producer:
        metadata = producer.send_many("t", [b"v"] * 12, keys=keys).get(timeout=10)
        assert [m.partition for m in metadata] == [partition_for_key(k, 2) for k in keys]
        with pytest.raises(ValueError, match="a key for every record"):
            producer.send_many("t", [b"v", b"w"], keys=[b"k", None])
        with pytest.raises(ValueError, match="one per value"):
            producer.send_many("t", [b"v", b"w"], keys=[b"k"])


def test_send_many_keyless_records_all_arrive():
    cluster = FakeCluster({0: A, 1: B})
    with producer_on(cluster, batch_size=300) as producer:
        result = producer.send_many("t", [b"%04d" % i for i in range(50)])
        result.wait(timeout=10)
        from raftka.records import decode_batches
        values = sorted(
            r.value
            for broker in cluster.brokers.values()
            for request in broker.produces
            for p in request.partitions
            for r in decode_batches(p.record_batches)
        )
        assert values == [b"%04d" % i for i in range(50)]


def test_keyless_records_move_to_another_partition_once_their_batch_is_sent():
    cluster = FakeCluster({0: A, 1: B})
    with producer_on(cluster) as producer:  # linger 0: each batch is sent at once
        first = producer.send("t", b"one").get(timeout=10).partition
        second = producer.send("t", b"two").get(timeout=10).partition
        third = producer.send("t", b"three").get(timeout=10).partition
        assert first != second != third  # KIP-480: a sent batch moves the sticky partition


def test_a_callback_that_raises_does_not_stall_its_partition(caplog):
    """Regression: a user callback's exception escaped BatchResult.complete, so the sender
    never marked the batch finished; its partition stayed 'in flight' and flush() waited for
    ever. Kafka's producer logs a callback's exception and goes on; so does this one."""
    cluster = FakeCluster({0: A, 1: B})
    broker = cluster.brokers[A]
    broker.answer = None  # held until the callbacks are attached
    seen: list[int] = []

    def boom(future: Any) -> None:
        raise ValueError("the application's callback failed")

    producer = producer_on(cluster)
    try:
        first = producer.send("t", b"a", partition=0)
        first.add_done_callback(boom)
        first.add_done_callback(lambda f: seen.append(f.get().offset))  # still runs
        deadline = time.monotonic() + 10
        while not broker.unanswered and time.monotonic() < deadline:
            time.sleep(0.01)
        broker.answer = broker.accept
        pending, request = broker.unanswered.pop()
        pending.complete(broker.accept(request))
        first.get(timeout=10)
        second = producer.send("t", b"b", partition=0)
        # before the fix the partition stayed in flight: this timed out
        producer.flush(timeout=10)
        assert second.get(timeout=1).offset >= 0
    finally:
        producer.close(timeout=5)
    assert seen == [first.get().offset]
    assert "callback" in caplog.text


def test_keyless_sends_see_partitions_added_to_the_topic():
    """send()'s keyless fast path reads the partition list it cached; when the metadata
    replaces the list (partitions added), the next record must choose among the new list,
    not stay with the stale one."""
    cluster = FakeCluster({0: A})
    with producer_on(cluster) as producer:  # linger 0: each record is its own batch
        assert {producer.send("t", b"x").get(timeout=10).partition for _ in range(5)} == {0}
        cluster.leaders = {0: A, 1: B, 2: B}
        producer.metadata.refresh()
        seen = {producer.send("t", b"y").get(timeout=10).partition for _ in range(30)}
        assert seen == {0, 1, 2}
