"""Regressions the fuzzers found (tests/fuzz, bench/fuzz_long.py): each bug as the failure
the fuzzer reported, and the smallest inputs that show it."""

from __future__ import annotations

import os
import struct

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from raftka.broker.groups.state import ConsumerGroup, GroupError
from raftka.broker.kafka import codec
from raftka.broker.kafka.codec import MalformedRequestError
from raftka.broker.log.log import PartitionLog
from raftka.broker.produce_path import parse_produce_data
from raftka.proto.raftka.v1 import broker_pb2
from raftka.records import (
    CorruptBatchError,
    crc_of,
    decode_batches,
    encode_batch,
    split_batches,
    validate_batch,
    validate_records,
)
from tests.unit.log.helpers import small_config

NOW_MS = 1_700_000_000_000


def legacy_string(value: str) -> bytes:
    return struct.pack(">h", len(value)) + value.encode()


# ------------------------------------------------- non-nullable arrays decoded as None
# Found as "decoded a null into non-nullable field SyncGroupRequest.assignments" (and the
# same for Produce, Fetch, OffsetCommit, CreateTopics, JoinGroup, ... 20 request types).
# kio 0.6.5 reads an array length of -1 (compact: 0) as None whatever the schema says; the
# handlers iterate those fields, so the request raised TypeError in the handler, which the
# listener logs as an unexpected error with a traceback. Kafka refuses such a request while
# parsing it ("non-nullable field ... was serialized as null").
SYNC_GROUP_V3_NULL_ASSIGNMENTS = (
    struct.pack(">hhi", 14, 3, 1) + legacy_string("c")  # header v1
    + legacy_string("g") + struct.pack(">i", 1) + legacy_string("m")
    + struct.pack(">h", -1)  # group_instance_id: nullable, null
    + struct.pack(">i", -1))  # assignments: not nullable, null
PRODUCE_V9_NULL_TOPIC_DATA = (
    struct.pack(">hhi", 0, 9, 1) + legacy_string("c") + b"\x00"  # header v2
    + b"\x00"  # transactional_id: null (nullable)
    + struct.pack(">hi", -1, 1000)  # acks, timeout
    + b"\x00"  # topic_data: compact array length 0 = null
    + b"\x00")
OFFSET_COMMIT_V2_NULL_PARTITIONS = (
    struct.pack(">hhi", 8, 2, 1) + legacy_string("c")
    + legacy_string("g") + struct.pack(">i", 1) + legacy_string("m")
    + struct.pack(">q", -1)  # retention time
    + struct.pack(">i", 1) + legacy_string("orders")
    + struct.pack(">i", -1))  # a topic's partitions: null


@pytest.mark.parametrize(("frame", "field"), [
    (SYNC_GROUP_V3_NULL_ASSIGNMENTS, "assignments"),
    (PRODUCE_V9_NULL_TOPIC_DATA, "topic_data"),
    (OFFSET_COMMIT_V2_NULL_PARTITIONS, "partitions"),
], ids=["sync-group-v3", "produce-v9-flexible", "offset-commit-v2-nested"])
def test_a_null_non_nullable_array_is_a_malformed_request(frame: bytes, field: str) -> None:
    with pytest.raises(MalformedRequestError, match=rf"{field}: null"):
        codec.decode_request(frame)


def test_a_null_nullable_array_still_decodes_as_none() -> None:
    # Metadata v1 topics is nullable: null asks for every topic.
    frame = struct.pack(">hhi", 3, 1, 1) + legacy_string("c") + struct.pack(">i", -1)
    assert codec.decode_request(frame).body.topics is None
    # Metadata v9 (flexible), compact null.
    frame = struct.pack(">hhi", 3, 9, 1) + legacy_string("c") + b"\x00" + b"\x00" \
        + b"\x01\x00\x00" + b"\x00"
    assert codec.decode_request(frame).body.topics is None


# ------------------------------------------------- a bad regex poisoned the consumer group
# Found as "ConsumerGroup.heartbeat raised error: missing ), unterminated subpattern at
# position 0" (re.error). The member joined, kept its regex, and every later heartbeat of
# every member of the group raised re.error as well (the target is recomputed over all
# members' subscriptions), as did expiry: one client stopped the whole group.
def _beat(group: ConsumerGroup, regex: str = "", member_id: str = "", epoch: int = 0,
          new_member_id: str = "m1", topics: tuple[str, ...] | None = None) -> object:
    return group.heartbeat(
        member_id=member_id, member_epoch=epoch, client_id="c",
        subscribed_topics=list(topics) if topics is not None else None,
        subscribed_regex=regex, assignor="range", owned=(), session_timeout_ms=3000,
        partition_counts={"orders": 2}, now_ms=1, new_member_id=new_member_id)


@pytest.mark.parametrize("regex", ["(", "[a-", "a{2,1}", "*", "a{1001}", "(" * 5000])
def test_an_invalid_regex_is_refused_and_leaves_the_group_alone(regex: str) -> None:
    group = ConsumerGroup("g")

    with pytest.raises(GroupError, match="regular expression") as refused:
        _beat(group, regex)

    assert refused.value.code == "INVALID_REQUEST"
    assert group.members == {} and group.group_epoch == 0
    joined = _beat(group, topics=("orders",), new_member_id="m2")
    assert joined.assignment == {("orders", 0), ("orders", 1)}  # type: ignore[attr-defined]


def test_a_member_cannot_switch_to_an_invalid_regex() -> None:
    group = ConsumerGroup("g")
    first = _beat(group, "ord.*")
    member_id, epoch = first.member_id, first.member_epoch  # type: ignore[attr-defined]

    with pytest.raises(GroupError):
        _beat(group, "(", member_id=member_id, epoch=epoch)

    assert group.members[member_id].subscribed_regex == "ord.*"
    _beat(group, topics=("orders",), new_member_id="m2")  # the group still serves others
    assert set(group.members) == {member_id, "m2"}


# --------------------------------- offsets past a segment's int32 range wedged the log
# Found as "append_as_leader raised OverflowError: signed integer is greater than maximum",
# then "log changed although the input was refused". A compressed batch is checked by CRC
# only, so a producer may send one whose lastOffsetDelta is 2**31 - 1: the log end offset
# jumps by 2**31 within one segment, whose indexes keep offsets relative to the segment's
# base in int32. The next append wrote its bytes to the segment file, then failed indexing
# them (OverflowError): the client got UNKNOWN_SERVER_ERROR for a batch whose bytes sat in
# the file (and came back on restart), and every later append, roll and close failed the
# same way. Kafka rolls a new segment when an offset would not fit (LogSegment.shouldRoll).
def _huge_delta_gzip_batch() -> bytes:
    builder = DefaultRecordBatchBuilder(2, 1, 0, -1, -1, -1, 2**31 - 1)  # gzip
    for delta in range(3):
        builder.append(delta, NOW_MS, b"k", b"value" * 20, [])
    data = bytearray(builder.build())
    struct.pack_into(">i", data, 23, 2**31 - 1)  # lastOffsetDelta
    struct.pack_into(">I", data, 17, crc_of(data, 0, len(data)))
    return bytes(data)


def _produce(log: PartitionLog, batch: bytes, epoch: int = 0) -> object:
    data, batches = parse_produce_data(
        broker_pb2.PartitionProduceData(topic="t", partition=0, record_batches=batch), NOW_MS)
    return log.append_as_leader(data, batches, epoch, NOW_MS)


def _files(directory: str) -> dict[str, bytes]:
    out = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as handle:
            out[name] = handle.read()
    return out


def test_offsets_past_int32_of_a_segment_roll_a_new_segment(tmp_path) -> None:
    log = PartitionLog.open(str(tmp_path), small_config(index_interval_bytes=1), NOW_MS)
    plain = encode_batch([(None, b"v", [], NOW_MS)] * 2)
    _produce(log, plain)
    jump = _produce(log, _huge_delta_gzip_batch())
    assert jump.last_offset == 2 + 2**31 - 1  # type: ignore[attr-defined]

    for _ in range(3):  # raised OverflowError, after writing the batch's bytes
        _produce(log, plain)

    end = log.log_end_offset
    assert end == 2 + 2**31 + 6
    assert len(log.segment_base_offsets()) >= 2
    tail = decode_batches(log.read(2 + 2**31, 1 << 20), from_offset=2 + 2**31)
    assert [r.value for r in tail] == [b"v"] * 6
    log.close(NOW_MS)
    reopened = PartitionLog.open(str(tmp_path), small_config(index_interval_bytes=1), NOW_MS)
    assert reopened.log_end_offset == end
    reopened.close(NOW_MS)


def test_one_append_spanning_more_than_a_segment_can_index_is_refused_untouched(
        tmp_path) -> None:
    log = PartitionLog.open(str(tmp_path), small_config(), NOW_MS)
    _produce(log, encode_batch([(None, b"v", [], NOW_MS)]))
    before = _files(str(tmp_path)), log.log_end_offset
    huge = _huge_delta_gzip_batch()
    assert len(split_batches(huge + huge)) == 2

    with pytest.raises(CorruptBatchError, match="offsets"):
        _produce(log, huge + huge, epoch=1)

    assert (_files(str(tmp_path)), log.log_end_offset) == before
    log.close(NOW_MS)


# ------------------------------------------ a record decoder error with an empty reason
# Found by the long run (seed 1) as "refused because memory ran out: malformed records in
# batch: " (nothing after the colon). A record whose value length is an overlong varint
# (80ff..ff01: 2**63 - 64 once zigzag-decoded) passes aiokafka's bounds check by overflowing
# it, so the compiled decoder asks for ~2**63 bytes and raises a bare MemoryError (no memory
# is used: the allocation fails at once, with or without a cap). The refusal was right
# (CorruptBatchError, CORRUPT_MESSAGE) but said nothing about why.
OVERLONG_VALUE_LENGTH = bytes.fromhex(
    "000000000000000000000055ffffffff024b54e87e0000000000020000018bcfe568000000018bcfe568"
    "000000000000000007000000000000000000031000000002610262001000000202610262fe1000000402"
    "6180ffffffffffffffff016200")


def test_a_decoder_error_without_a_message_still_names_its_kind() -> None:
    header = validate_batch(OVERLONG_VALUE_LENGTH)  # the CRC is right: the records are not
    assert header.records_count == 3

    with pytest.raises(CorruptBatchError, match=r"malformed records in batch: MemoryError"):
        validate_records(OVERLONG_VALUE_LENGTH)
    with pytest.raises(CorruptBatchError, match=r"cannot decode batch at 0: MemoryError"):
        decode_batches(OVERLONG_VALUE_LENGTH)


# ------------------------------------- a regex that backtracks froze the coordinator
# Python's `re` takes exponential time on `(a+)+$` against "aaaa...b": one member's
# subscription, evaluated against every topic name on every heartbeat, stopped the broker's
# event loop. Subscription regexes are RE2 now (linear time), as Kafka's RE2/J ones are.
def test_a_backtracking_regex_matches_in_linear_time() -> None:
    group = ConsumerGroup("g")
    counts = {"a" * 60 + "b": 1, "orders": 2}
    result = group.heartbeat(
        member_id="", member_epoch=0, client_id="c", subscribed_topics=None,
        subscribed_regex="(a+)+$", assignor="range", owned=(), session_timeout_ms=3000,
        partition_counts=counts, now_ms=1, new_member_id="m1")
    assert result.assignment == frozenset()  # type: ignore[attr-defined]


@pytest.mark.parametrize("regex", ["(?<=a)b", r"(a)\1"])
def test_a_regex_outside_re2_syntax_is_refused_with_the_reason(regex: str) -> None:
    with pytest.raises(GroupError, match="not a valid RE2 regular expression"):
        _beat(ConsumerGroup("g"), regex)
