"""Per-partition batching: linger, size, one batch in flight per partition, futures."""

from __future__ import annotations

import pytest

from raftka.client.accumulator import BufferFullError, PendingRecord, RecordAccumulator


def record(value: bytes = b"v", ts: int = 1) -> PendingRecord:
    return PendingRecord(None, value, [], ts)


def test_batches_wait_for_linger_unless_full_or_flushing():
    acc = RecordAccumulator(batch_size_bytes=1000, linger_ms=50, buffer_memory_bytes=10_000)
    acc.append("t", 0, record(), 30, now_ms=0, max_block_s=0)
    assert acc.drain(now_ms=10) == ([], 40)
    ready, _ = acc.drain(now_ms=50)
    assert [(b.topic, b.partition, b.record_count) for b in ready] == [("t", 0, 1)]
    acc.append("t", 1, record(), 30, now_ms=60, max_block_s=0)
    acc.begin_flush()
    assert len(acc.drain(now_ms=60)[0]) == 1


def test_a_full_batch_is_ready_at_once_and_the_next_one_starts():
    acc = RecordAccumulator(batch_size_bytes=200, linger_ms=10_000, buffer_memory_bytes=10_000)
    fulls = [acc.append("t", 0, record(), 60, now_ms=0, max_block_s=0)[1] for _ in range(4)]
    assert fulls == [False, False, True, False]  # the third record starts batch two
    ready, _ = acc.drain(now_ms=1)
    assert len(ready) == 1 and ready[0].record_count == 2


def test_one_batch_per_partition_in_flight_and_retries_go_first():
    acc = RecordAccumulator(batch_size_bytes=100, linger_ms=0, buffer_memory_bytes=10_000)
    for _ in range(3):
        acc.append("t", 0, record(), 80, now_ms=0, max_block_s=0)
    (first,), _ = acc.drain(now_ms=0)
    assert acc.drain(now_ms=0)[0] == []  # the partition is busy
    acc.requeue(first, retry_after_ms=100)
    assert acc.drain(now_ms=50)[0] == []  # backing off
    (again,), _ = acc.drain(now_ms=100)
    assert again is first


def test_futures_resolve_from_their_batch_with_their_own_offset():
    acc = RecordAccumulator(batch_size_bytes=1000, linger_ms=0, buffer_memory_bytes=10_000)
    futures = [acc.append("t", 2, record(ts=7), 10, now_ms=0, max_block_s=0)[0] for _ in range(3)]
    (batch,), _ = acc.drain(now_ms=0)
    assert not futures[0].done()
    seen = []
    futures[2].add_done_callback(lambda f: seen.append(f.get().offset))
    batch.result.complete(100, None)
    acc.complete(batch)
    assert [f.get(0).offset for f in futures] == [100, 101, 102]
    assert futures[0].get(0).timestamp_ms == 7 and seen == [102]


def test_failed_batch_fails_every_record_and_frees_its_memory():
    acc = RecordAccumulator(batch_size_bytes=1000, linger_ms=0, buffer_memory_bytes=100)
    future, _ = acc.append("t", 0, record(), 90, now_ms=0, max_block_s=0)
    with pytest.raises(BufferFullError):
        acc.append("t", 0, record(), 90, now_ms=0, max_block_s=0.01)
    (batch,), _ = acc.drain(now_ms=0)
    batch.result.complete(-1, RuntimeError("boom"))
    acc.complete(batch)
    assert isinstance(future.exception(0), RuntimeError)
    with pytest.raises(RuntimeError, match="boom"):
        future.get(0)
    acc.append("t", 0, record(), 90, now_ms=0, max_block_s=0)  # room again


def test_a_new_batch_wakes_the_sender_even_before_it_waits():
    """The SDK's ~100 ms synchronous send: a record queued with linger_ms=0 did not wake the
    sender, which slept out its idle poll. A wake-up between drain() and the wait must not be
    lost either, so wait_for_work returns at once here (it would sit out the timeout)."""
    acc = RecordAccumulator(batch_size_bytes=1000, linger_ms=0, buffer_memory_bytes=10_000)
    assert acc.drain(now_ms=0) == ([], None)  # the sender found nothing ...
    acc.append("t", 0, record(), 10, now_ms=0, max_block_s=0)  # ... then a send() came
    assert acc.wait_for_work(timeout_s=30) is True
    (batch,), _ = acc.drain(now_ms=0)
    assert acc.wait_for_work(timeout_s=0) is False  # nothing new since that drain
    acc.append("t", 0, record(), 10, now_ms=0, max_block_s=0)  # joins a new batch: wake
    assert acc.wait_for_work(timeout_s=30) is True
    batch.result.complete(0, None)
    acc.complete(batch)  # the partition is free for its next batch: wake
    assert acc.wait_for_work(timeout_s=30) is True
