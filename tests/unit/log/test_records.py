"""RecordBatch v2 framing: what the broker validates and patches."""

from __future__ import annotations

import struct

import pytest

from raftka.records import (
    HEADER_SIZE,
    CorruptBatchError,
    decode_batches,
    encode_batch,
    iter_headers,
    patch_offsets,
    read_header,
    split_batches,
    validate_batch,
    validate_records,
)


def test_encode_decode_round_trip_keeps_keys_values_headers_and_timestamps():
    batch = encode_batch(
        [(b"k1", b"v1", [("h", b"x")], 1_700_000_000_123), (None, None, [], 1_700_000_000_456)]
    )
    records = decode_batches(batch)
    assert [(r.offset, r.key, r.value, r.headers, r.timestamp_ms) for r in records] == [
        (0, b"k1", b"v1", (("h", b"x"),), 1_700_000_000_123),
        (1, None, None, (), 1_700_000_000_456),
    ]


def test_patching_offsets_keeps_the_crc_valid():
    batch = bytearray(encode_batch([(None, b"a", [], 1), (None, b"b", [], 2)]))
    patch_offsets(batch, 0, 1000, 7)
    header = validate_batch(batch)
    assert (header.base_offset, header.partition_leader_epoch, header.last_offset) == (
        1000,
        7,
        1001,
    )
    assert [r.offset for r in decode_batches(batch)] == [1000, 1001]


def test_flipped_byte_inside_the_crc_is_rejected():
    batch = bytearray(encode_batch([(None, b"hello", [], 1)]))
    batch[-1] ^= 0xFF
    with pytest.raises(CorruptBatchError, match="CRC32C mismatch"):
        validate_batch(batch)


@pytest.mark.parametrize("cut", [1, 10, HEADER_SIZE - 1])
def test_truncated_batch_is_rejected(cut):
    batch = encode_batch([(None, b"hello", [], 1)])
    with pytest.raises(CorruptBatchError):
        validate_batch(batch[:cut])
    with pytest.raises(CorruptBatchError, match="declares"):
        validate_batch(batch[:-1])


def test_wrong_magic_is_rejected():
    batch = bytearray(encode_batch([(None, b"x", [], 1)]))
    batch[16] = 1
    with pytest.raises(CorruptBatchError, match="magic"):
        validate_batch(batch)


def test_split_validates_every_batch_of_a_concatenation():
    first = encode_batch([(None, b"a", [], 1)])
    second = encode_batch([(None, b"b", [], 1), (None, b"c", [], 1)])
    found = split_batches(first + second)
    assert [(pos, h.records_count) for pos, h in found] == [(0, 1), (len(first), 2)]
    with pytest.raises(CorruptBatchError):
        split_batches(first + second[:-3])


def test_iter_headers_stops_at_a_partial_tail():
    first = encode_batch([(None, b"a", [], 1)])
    assert len(list(iter_headers(first + first[:30]))) == 1


def test_validate_records_catches_a_count_that_lies():
    batch = bytearray(encode_batch([(None, b"a", [], 1), (None, b"b", [], 1)]))
    struct.pack_into(">i", batch, 57, 3)  # recordsCount, inside the CRC: recompute it
    from raftka.records import crc_of

    struct.pack_into(">I", batch, 17, crc_of(batch, 0, len(batch)))
    validate_batch(batch)
    with pytest.raises(CorruptBatchError):
        validate_records(bytes(batch))


def test_header_fields_are_read():
    batch = encode_batch(
        [(None, b"a", [], 5), (None, b"b", [], 9)],
        producer_id=42,
        producer_epoch=3,
        base_sequence=10,
    )
    header = read_header(batch)
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (42, 3, 10)
    assert (header.base_timestamp, header.max_timestamp, header.last_sequence) == (5, 9, 11)
