"""Fetcher against fake brokers: requests per leader, decoding, resets, refresh triggers."""

from __future__ import annotations

import grpc
import pytest

from raftka.client.errors import InvalidRequestError, OffsetOutOfRangeError
from raftka.client.fetcher import ConsumerRecord, Fetcher
from raftka.client.subscription import EARLIEST, SubscriptionState
from raftka.client.types import TopicPartition
from raftka.proto.raftka.v1 import broker_pb2, common_pb2
from raftka.records import CorruptBatchError, encode_batch

Code = common_pb2.ErrorCode
A0, A1 = TopicPartition("a", 0), TopicPartition("a", 1)


def batch(base_offset: int, *values: bytes) -> bytes:
    return encode_batch([(None, v, [], 1000) for v in values], base_offset=base_offset)


class Unavailable(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "down"


class Done:
    def __init__(self, outcome):
        self._outcome = outcome
        self.cancelled = False

    def result(self, timeout=None):
        if self._outcome is None:  # a broker that has not answered (yet)
            raise grpc.FutureTimeoutError()
        if isinstance(self._outcome, Exception):
            raise self._outcome
        return self._outcome

    def cancel(self):
        self.cancelled = True
        return True

    def done(self):
        return self._outcome is not None or self.cancelled

    def add_done_callback(self, callback):
        if self.done():
            callback(self)


class Broker:
    """Answers Fetch and ListOffsets from scripted replies, recording the requests."""

    def __init__(self):
        self.fetches: list[broker_pb2.FetchRequest] = []
        self.futures: list[Done] = []
        self.fetch_replies: list = []
        self.offsets: dict[TopicPartition, int] = {}
        self.offset_requests: list[broker_pb2.ListOffsetsRequest] = []
        self.Fetch = self

    def future(self, request, timeout):
        self.fetches.append(request)
        self.futures.append(Done(self.fetch_replies.pop(0)))
        return self.futures[-1]

    def ListOffsets(self, request, timeout):
        self.offset_requests.append(request)
        return broker_pb2.ListOffsetsResponse(
            partitions=[
                broker_pb2.ListOffsetsPartitionResponse(
                    topic=p.topic,
                    partition=p.partition,
                    offset=self.offsets[TopicPartition(p.topic, p.partition)],
                )
                for p in request.partitions
            ]
        )


class Connections:
    def __init__(self, brokers):
        self.brokers = brokers

    def broker(self, address):
        return self.brokers[address]


class Metadata:
    def __init__(self, leaders):
        self.leaders = leaders
        self.refreshes = 0

    def leader_address(self, topic, partition):
        return self.leaders.get(TopicPartition(topic, partition))

    def ensure_topic(self, topic, allow_auto_create):
        return []

    def refresh(self, topics=None, allow_auto_create=False):
        self.refreshes += 1

    def note_unreachable(self, address):
        pass

    def use_leader_hint(self, topic, partition, leader_id, leader_epoch, endpoints=()):
        """Follows any hint to broker "b<leader_id>" (the real check is ClusterMetadata's)."""
        if leader_id <= 0:
            return False
        self.leaders[TopicPartition(topic, partition)] = f"b{leader_id}"
        return True


def reply(tp, data=b"", error=0):
    return broker_pb2.FetchPartitionResponse(
        topic=tp.topic, partition=tp.partition, error_code=error, record_batches=data
    )


def setup(reset="earliest", leaders=None, **kwargs):
    brokers = {"b1": Broker(), "b2": Broker()}
    metadata = Metadata(leaders if leaders is not None else {A0: "b1", A1: "b2"})
    state: SubscriptionState[ConsumerRecord] = SubscriptionState(reset)
    fetcher = Fetcher(
        state,
        Connections(brokers),
        metadata,
        key_deserializer=lambda b: b,
        value_deserializer=lambda b: b.decode() if b is not None else None,
        **kwargs,
    )
    return fetcher, state, brokers, metadata


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr("raftka.client.fetcher.time.sleep", lambda s: None)


def test_one_fetch_per_leader_and_the_records_land_in_the_state():
    fetcher, state, brokers, _ = setup(fetch_min_bytes=7, max_partition_fetch_bytes=99)
    state.assign_from_user([A0, A1])
    state.seek(A0, 0)
    state.seek(A1, 5)
    brokers["b1"].fetch_replies.append(
        broker_pb2.FetchResponse(partitions=[reply(A0, batch(0, b"x", b"y"))])
    )
    brokers["b2"].fetch_replies.append(
        broker_pb2.FetchResponse(partitions=[reply(A1, batch(5, b"z"))])
    )
    fetcher.fetch_once(250)
    (request,) = brokers["b1"].fetches
    assert request.max_wait_ms == 250 and request.min_bytes == 7
    assert [
        (p.topic, p.partition, p.fetch_offset, p.partition_max_bytes) for p in request.partitions
    ] == [("a", 0, 0, 99)]
    assert brokers["b2"].fetches[0].partitions[0].fetch_offset == 5
    out = state.drain(10)
    assert [(r.offset, r.value) for r in out[A0]] == [(0, "x"), (1, "y")]
    assert [(r.topic, r.partition, r.offset, r.value, r.timestamp_ms) for r in out[A1]] == [
        ("a", 1, 5, "z", 1000)
    ]
    assert state.fetch_offsets() == {A0: 2, A1: 6}


def test_records_before_the_fetch_offset_are_skipped_and_gaps_move_it_on():
    fetcher, state, brokers, _ = setup(leaders={A0: "b1"})
    state.assign_from_user([A0])
    state.seek(A0, 1)
    data = batch(0, b"old", b"new") + batch(7, b"later")  # offsets 2..6 compacted away
    brokers["b1"].fetch_replies.append(broker_pb2.FetchResponse(partitions=[reply(A0, data)]))
    fetcher.fetch_once(0)
    assert [r.offset for r in state.drain(10)[A0]] == [1, 7]
    assert state.position(A0) == 8


def test_partitions_without_a_position_are_reset_before_the_fetch():
    fetcher, state, brokers, _ = setup(leaders={A0: "b1"})
    state.assign_from_user([A0])
    brokers["b1"].offsets[A0] = 40
    brokers["b1"].fetch_replies.append(broker_pb2.FetchResponse(partitions=[reply(A0)]))
    fetcher.fetch_once(0)
    assert brokers["b1"].offset_requests[0].partitions[0].timestamp_ms == EARLIEST
    assert brokers["b1"].fetches[0].partitions[0].fetch_offset == 40
    assert state.position(A0) == 40


def test_out_of_range_resets_per_the_policy():
    fetcher, state, brokers, _ = setup(leaders={A0: "b1"})
    state.assign_from_user([A0])
    state.seek(A0, 3)
    state.add_fetched(A0, [], 9)
    brokers["b1"].offsets[A0] = 20
    brokers["b1"].fetch_replies.append(
        broker_pb2.FetchResponse(partitions=[reply(A0, error=Code.OFFSET_OUT_OF_RANGE)])
    )
    fetcher.fetch_once(0)
    assert state.position(A0) == 20 and state.fetch_offsets() == {A0: 20}


def test_out_of_range_without_a_policy_raises():
    fetcher, state, brokers, _ = setup(reset="none", leaders={A0: "b1"})
    state.assign_from_user([A0])
    state.seek(A0, 3)
    brokers["b1"].fetch_replies.append(
        broker_pb2.FetchResponse(partitions=[reply(A0, error=Code.OFFSET_OUT_OF_RANGE)])
    )
    with pytest.raises(OffsetOutOfRangeError, match="auto_offset_reset is 'none'"):
        fetcher.fetch_once(0)


@pytest.mark.parametrize("error", [Code.NOT_LEADER_OR_FOLLOWER, Code.UNKNOWN_TOPIC_OR_PARTITION])
def test_leader_changes_without_a_hint_and_unknown_partitions_refresh_the_metadata(error):
    fetcher, state, brokers, metadata = setup(leaders={A0: "b1"})
    state.assign_from_user([A0])
    state.seek(A0, 3)
    brokers["b1"].fetch_replies.append(
        broker_pb2.FetchResponse(partitions=[reply(A0, error=error)])
    )
    fetcher.fetch_once(0)
    assert metadata.refreshes == 1 and state.fetch_offsets() == {A0: 3}


def test_an_unreachable_leader_refreshes_the_metadata():
    fetcher, state, brokers, metadata = setup(leaders={A0: "b1"})
    state.assign_from_user([A0])
    state.seek(A0, 3)
    brokers["b1"].fetch_replies.append(Unavailable())
    fetcher.fetch_once(0)
    assert metadata.refreshes == 1


def test_no_known_leader_refreshes_without_fetching():
    fetcher, state, brokers, metadata = setup(leaders={})
    state.assign_from_user([A0])
    state.seek(A0, 0)
    fetcher.fetch_once(0)
    assert metadata.refreshes == 1 and not brokers["b1"].fetches


def test_a_non_retriable_error_is_raised():
    fetcher, state, brokers, _ = setup(leaders={A0: "b1"})
    state.assign_from_user([A0])
    state.seek(A0, 0)
    brokers["b1"].fetch_replies.append(
        broker_pb2.FetchResponse(partitions=[reply(A0, error=Code.INVALID_REQUEST)])
    )
    with pytest.raises(InvalidRequestError):
        fetcher.fetch_once(0)


def test_a_corrupt_batch_is_refused_and_nothing_is_buffered():
    fetcher, state, brokers, _ = setup(leaders={A0: "b1"})
    state.assign_from_user([A0])
    state.seek(A0, 0)
    data = bytearray(batch(0, b"x"))
    data[-1] ^= 0xFF
    brokers["b1"].fetch_replies.append(
        broker_pb2.FetchResponse(partitions=[reply(A0, bytes(data))])
    )
    with pytest.raises(CorruptBatchError):
        fetcher.fetch_once(0)
    assert not state.has_buffered() and state.fetch_offsets() == {A0: 0}


def test_replies_for_partitions_no_longer_assigned_are_ignored():
    fetcher, state, brokers, _ = setup(leaders={A0: "b1"})
    state.assign_from_user([A0])
    state.seek(A0, 0)
    brokers["b1"].fetch_replies.append(
        broker_pb2.FetchResponse(partitions=[reply(A1, batch(0, b"x"))])
    )
    fetcher.fetch_once(0)
    assert not state.has_buffered()


def test_nothing_to_fetch_sleeps_instead():
    fetcher, state, brokers, metadata = setup()
    state.assign_from_user([A0])
    state.pause(A0)
    fetcher.fetch_once(0)
    assert not brokers["b1"].fetches and not brokers["b1"].offset_requests
    assert metadata.refreshes == 0


def test_a_not_leader_answer_naming_the_leader_moves_the_partition_without_a_refresh():
    fetcher, state, brokers, metadata = setup(leaders={A0: "b1"})
    state.assign_from_user([A0])
    state.seek(A0, 3)
    hinted = reply(A0, error=Code.NOT_LEADER_OR_FOLLOWER)
    hinted.leader_id, hinted.leader_epoch = 2, 5
    brokers["b1"].fetch_replies.append(broker_pb2.FetchResponse(partitions=[hinted]))
    brokers["b2"].fetch_replies.append(
        broker_pb2.FetchResponse(partitions=[reply(A0, batch(3, b"here"))]))
    fetcher.fetch_once(0)
    fetcher.fetch_once(0)
    assert metadata.refreshes == 0
    assert [r.value for r in state.drain(10)[A0]] == ["here"]


def test_a_broker_that_does_not_answer_holds_up_only_its_own_partitions():
    fetcher, state, brokers, metadata = setup()
    state.assign_from_user([A0, A1])
    state.seek(A0, 0)
    state.seek(A1, 0)
    brokers["b1"].fetch_replies.append(None)  # b1 (A0's leader) is paused
    brokers["b2"].fetch_replies.extend(
        broker_pb2.FetchResponse(partitions=[reply(A1, batch(i, b"v%d" % i))]) for i in range(3))
    for _ in range(3):
        fetcher.fetch_once(0)
    assert len(brokers["b1"].fetches) == 1  # one in flight, not sent again meanwhile
    assert [r.offset for r in state.drain(10)[A1]] == [0, 1, 2]
    metadata.leaders[A0] = "b2"  # the controller moved A0's leadership away from b1
    brokers["b2"].fetch_replies.append(broker_pb2.FetchResponse())
    brokers["b2"].fetch_replies.append(
        broker_pb2.FetchResponse(partitions=[reply(A0, batch(0, b"moved"))]))
    fetcher.fetch_once(0)  # the late fetch is dropped once A0 has another leader ...
    assert brokers["b1"].futures[0].cancelled
    fetcher.fetch_once(0)  # ... and A0 is fetched from its new leader
    assert [r.value for r in state.drain(10)[A0]] == ["moved"]


def test_a_late_reply_for_an_offset_the_consumer_moved_away_from_is_dropped():
    fetcher, state, brokers, _ = setup(leaders={A0: "b1"})
    state.assign_from_user([A0])
    state.seek(A0, 0)
    brokers["b1"].fetch_replies.append(None)
    fetcher.fetch_once(0)
    state.seek(A0, 10)
    brokers["b1"].futures[0]._outcome = broker_pb2.FetchResponse(
        partitions=[reply(A0, batch(0, b"stale"))])
    brokers["b1"].fetch_replies.append(broker_pb2.FetchResponse())
    fetcher.fetch_once(0)
    assert not state.has_buffered() and state.fetch_offsets() == {A0: 10}


def test_send_ahead_fetches_only_drained_partitions_and_the_next_round_takes_the_reply():
    fetcher, state, brokers, _ = setup()
    state.assign_from_user([A0, A1])
    state.seek(A0, 0)
    state.seek(A1, 5)
    brokers["b1"].fetch_replies.append(
        broker_pb2.FetchResponse(partitions=[reply(A0, batch(0, b"x"))])
    )
    brokers["b2"].fetch_replies.append(
        broker_pb2.FetchResponse(partitions=[reply(A1, batch(5, b"z", b"w"))])
    )
    fetcher.fetch_once(0)
    assert state.drain(2) == {A0: [ConsumerRecord("a", 0, 0, 1000, None, "x", ())],
                              A1: [ConsumerRecord("a", 1, 5, 1000, None, "z", ())]}
    brokers["b1"].fetch_replies.append(
        broker_pb2.FetchResponse(partitions=[reply(A0, batch(1, b"y"))])
    )
    fetcher.send_ahead(100)  # A0 is drained, A1 still has a record buffered
    assert len(brokers["b1"].fetches) == 2 and len(brokers["b2"].fetches) == 1
    assert brokers["b1"].fetches[1].partitions[0].fetch_offset == 1
    fetcher.send_ahead(100)  # already in flight: not sent twice
    assert len(brokers["b1"].fetches) == 2
    assert [(r.offset, r.value) for r in state.drain(10)[A1]] == [(6, "w")]
    brokers["b2"].fetch_replies.append(broker_pb2.FetchResponse(partitions=[reply(A1)]))
    fetcher.fetch_once(0)  # takes the reply sent ahead
    assert [(r.offset, r.value) for r in state.drain(10)[A0]] == [(1, "y")]


def test_records_from_one_broker_are_handed_out_without_waiting_for_the_others_long_poll():
    fetcher, state, brokers, metadata = setup()
    state.assign_from_user([A0, A1])
    state.seek(A0, 0)
    state.seek(A1, 0)
    brokers["b1"].fetch_replies.append(None)  # A0 is idle: its long poll has not answered
    brokers["b2"].fetch_replies.append(
        broker_pb2.FetchResponse(partitions=[reply(A1, batch(0, b"now"))]))
    fetcher.fetch_once(60_000)  # a minute's long poll: returning at all means it did not wait
    assert [r.value for r in state.drain(10)[A1]] == ["now"]
    assert metadata.refreshes == 0  # b1's long poll is not late: it stays in flight
    assert set(fetcher._in_flight) == {"b1"}
