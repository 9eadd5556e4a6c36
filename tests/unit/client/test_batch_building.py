"""The producer's batches are written record by record into the compiled builder and the
consumer's are decoded lazily per batch: both must give exactly what the plain codec in
raftka/records.py gives (byte for byte, record for record), idempotence fields included."""

from __future__ import annotations

import gc

import pytest

from raftka.client.accumulator import PendingRecord, ProducerBatch, RecordAccumulator
from raftka.client.fetcher import ConsumerRecord, LazyBatch, decode_records
from raftka.client.serialization import DESERIALIZERS
from raftka.client.types import TopicPartition
from raftka.records import (
    decode_batches,
    encode_batch,
    read_header,
    restamp_producer,
    validate_batch,
    validate_records,
)

RECORDS = [
    (b"k1", b"v1", [], 1_000),
    (None, b"v2" * 50, [("h", b"x"), ("empty", None)], 1_001),
    (b"k3", None, [], 1_002),
]
TP = TopicPartition("t", 4)
PLAIN = DESERIALIZERS["bytes"]


def built(records=RECORDS, stamp=(-1, -1, -1)) -> bytes:
    batch = ProducerBatch("t", 0, created_ms=0)
    for key, value, headers, ts in records:
        batch.add(key, value, list(headers), ts)
    batch.producer_id, batch.producer_epoch, batch.base_sequence = stamp
    return batch.encoded()


def test_a_batch_built_record_by_record_is_byte_identical_to_encode_batch():
    assert built() == encode_batch(RECORDS)


def test_the_idempotence_fields_are_written_and_covered_by_the_crc():
    data = built(stamp=(77, 3, 1234))
    assert data == encode_batch(RECORDS, producer_id=77, producer_epoch=3, base_sequence=1234)
    header = validate_batch(data)
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (77, 3, 1234)
    validate_records(data)


def test_a_batch_first_sent_without_a_producer_id_is_restamped_on_retry():
    batch = ProducerBatch("t", 0, created_ms=0)
    for key, value, headers, ts in RECORDS:
        batch.add(key, value, headers, ts)
    first = batch.encoded()  # InitProducerId failed: the first attempt goes without one
    assert read_header(first).producer_id == -1
    batch.producer_id, batch.producer_epoch, batch.base_sequence = 9, 0, 40
    again = batch.encoded()
    assert again == encode_batch(RECORDS, producer_id=9, producer_epoch=0, base_sequence=40)
    validate_batch(again)  # the CRC was recomputed
    with pytest.raises(RuntimeError):
        batch.add(None, b"late", [], 1)  # a built batch takes no more records


def test_restamp_producer_recomputes_the_crc():
    data = bytearray(encode_batch(RECORDS))
    restamp_producer(data, 5, 1, 7)
    assert bytes(data) == encode_batch(RECORDS, producer_id=5, producer_epoch=1, base_sequence=7)


def test_append_many_fills_batches_in_order_and_splits_at_the_batch_size():
    acc = RecordAccumulator(batch_size_bytes=61 + 3 * 34, linger_ms=0, buffer_memory_bytes=10_000)
    values = [b"value-%03d" % i for i in range(8)]  # 10 bytes + 24 overhead = 34 each
    segments, full = acc.append_many("t", 0, values, None, 1_000, now_ms=0, max_block_s=0)
    assert full
    assert [(first, count) for _, first, count in segments] == [(0, 3), (0, 3), (0, 2)]
    ready, _ = acc.drain(now_ms=0, force=True)
    decoded = [r.value for r in decode_batches(ready[0].encoded())]
    assert decoded == values[:3]


def test_append_many_and_append_share_the_open_batch():
    acc = RecordAccumulator(batch_size_bytes=16_384, linger_ms=0, buffer_memory_bytes=1 << 20)
    acc.append("t", 0, PendingRecord(None, b"a", [], 5), 25, now_ms=0, max_block_s=0)
    segments, _ = acc.append_many("t", 0, [b"b", b"c"], [b"1", b"2"], 6, now_ms=0, max_block_s=0)
    assert [(first, count) for _, first, count in segments] == [(1, 2)]
    ready, _ = acc.drain(now_ms=0, force=True)
    records = decode_batches(ready[0].encoded())
    assert [(r.offset, r.key, r.value, r.timestamp_ms) for r in records] == [
        (0, None, b"a", 5), (1, b"1", b"b", 6), (2, b"2", b"c", 6)
    ]


def expected(data: bytes, from_offset: int = 0) -> list[ConsumerRecord]:
    return [
        ConsumerRecord(TP.topic, TP.partition, r.offset, r.timestamp_ms, r.key, r.value,
                       r.headers)
        for r in decode_batches(data, from_offset=from_offset)
    ]


def test_decode_records_matches_the_plain_decoder_headers_and_nulls_included():
    data = encode_batch(RECORDS, base_offset=100)
    got = decode_records(TP, data, read_header(data), 0, PLAIN, PLAIN)
    assert got == expected(data)
    assert got[1].headers == (("h", b"x"), ("empty", None))
    assert got[2].value is None and got[0].offset == 100


def test_decode_records_from_the_middle_of_a_batch_and_with_deserializers():
    data = encode_batch(RECORDS, base_offset=100)
    got = decode_records(TP, data, read_header(data), 101, PLAIN, DESERIALIZERS["str"])
    assert [(r.offset, r.value) for r in got] == [(101, "v2" * 50), (102, None)]


def test_a_lazy_batch_decodes_only_when_handed_out():
    data = encode_batch(RECORDS, base_offset=100)
    lazy = LazyBatch(TP, data, read_header(data), 0, (PLAIN, PLAIN))
    assert len(lazy) == 3  # from the header
    assert lazy._decoded is None
    assert list(lazy[1:]) == expected(data)[1:]
    assert lazy._decoded is not None


def test_a_lazy_batch_that_starts_before_the_position_counts_what_it_hands_out():
    data = encode_batch(RECORDS, base_offset=100)
    lazy = LazyBatch(TP, data, read_header(data), 102, (PLAIN, PLAIN))
    assert len(lazy) == 1 and lazy[0].offset == 102


def test_decoding_leaves_the_garbage_collector_as_it_found_it():
    data = encode_batch(RECORDS)
    LazyBatch(TP, data, read_header(data), 0, (PLAIN, PLAIN))[0]
    assert gc.isenabled()
    gc.disable()
    try:
        LazyBatch(TP, data, read_header(data), 0, (PLAIN, PLAIN))[0]
        assert not gc.isenabled()  # a caller's gc.disable() is kept
    finally:
        gc.enable()


def test_consumer_records_keep_their_field_names():
    record = ConsumerRecord("t", 1, 2, 3, b"k", b"v", ())
    assert (record.topic, record.partition, record.offset, record.timestamp_ms) == ("t", 1, 2, 3)
    assert (record.key, record.value, record.headers) == (b"k", b"v", ())


@pytest.mark.parametrize("seed", range(20))
def test_append_many_builds_the_batches_record_by_record_appends_build(seed):
    """append_many finds each batch's end by bisecting prefix sums; append decides record
    by record. Same inputs, same batches, byte for byte (keys, nulls, an oversized record,
    a batch already open)."""
    import random

    rng = random.Random(seed)
    batch_size = rng.choice([200, 500, 1_000, 4_096])
    count = rng.randint(1, 300)
    values = [None if rng.random() < 0.05 else bytes(rng.randint(0, 120)) for _ in range(count)]
    if rng.random() < 0.3:
        values[rng.randrange(count)] = bytes(batch_size * 2)  # bigger than any batch
    keyed = rng.random() < 0.5
    keys = [None if rng.random() < 0.1 else b"k%d" % i for i in range(count)] if keyed else None
    opened = rng.random() < 0.5

    def fresh() -> RecordAccumulator:
        acc = RecordAccumulator(batch_size_bytes=batch_size, linger_ms=0,
                                buffer_memory_bytes=1 << 24)
        if opened:
            acc.append("t", 0, PendingRecord(b"first", b"x", [], 3), 30, now_ms=0,
                       max_block_s=0)
        return acc

    bulk = fresh()
    segments, _ = bulk.append_many("t", 0, values, keys, 9, now_ms=0, max_block_s=0)
    one_by_one = fresh()
    for i, value in enumerate(values):
        key = keys[i] if keys is not None else None
        size = 24 + len(key or b"") + len(value or b"")
        one_by_one.append("t", 0, PendingRecord(key, value, [], 9), size, now_ms=0,
                          max_block_s=0)
    got, _ = bulk.drain(now_ms=0, force=True)
    want, _ = one_by_one.drain(now_ms=0, force=True)
    assert sum(c for _, _, c in segments) == count
    while got or want:  # one batch per partition per drain: finish each to see the next
        assert [b.encoded() for b in got] == [b.encoded() for b in want]
        assert [b.size_bytes for b in got] == [b.size_bytes for b in want]
        for batch in got:
            bulk.complete(batch)
        for batch in want:
            one_by_one.complete(batch)
        got, _ = bulk.drain(now_ms=0, force=True)
        want, _ = one_by_one.drain(now_ms=0, force=True)
