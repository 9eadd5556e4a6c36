"""PartitionLog: appends, reads, segments, indexes, recovery, retention, truncation."""

from __future__ import annotations

import os

import pytest

from raftka.broker.log.log import OffsetOutOfRangeError, PartitionLog, RecordTooLargeError
from raftka.records import decode_batches
from tests.unit.log.helpers import append_values, make_batch, small_config

NOW = 1_700_000_000_000


def values_of(data: bytes, from_offset: int = 0) -> list[bytes | None]:
    return [r.value for r in decode_batches(data, from_offset=from_offset)]


def read_all(log: PartitionLog) -> list[tuple[int, bytes | None]]:
    out = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        records = decode_batches(data, from_offset=offset)
        assert records, f"no progress at {offset}"
        out.extend((r.offset, r.value) for r in records)
        offset = records[-1].offset + 1
    return out


def test_append_assigns_consecutive_offsets(tmp_path):
    log = PartitionLog.open(str(tmp_path), small_config(), NOW)
    first = append_values(log, [b"a", b"b"])
    second = append_values(log, [b"c"])
    assert (first.base_offset, first.last_offset, second.base_offset) == (0, 1, 2)
    assert log.log_end_offset == 3
    assert values_of(log.read(0, 1 << 20)) == [b"a", b"b", b"c"]


def test_read_from_the_middle_returns_the_batch_holding_the_offset(tmp_path):
    log = PartitionLog.open(str(tmp_path), small_config(), NOW)
    append_values(log, [b"a", b"b", b"c"])
    append_values(log, [b"d"])
    assert values_of(log.read(1, 1 << 20), from_offset=1) == [b"b", b"c", b"d"]
    assert log.read(4, 1 << 20) == b""


def test_read_respects_max_offset_and_max_bytes_but_returns_one_batch(tmp_path):
    log = PartitionLog.open(str(tmp_path), small_config(), NOW)
    for i in range(5):
        append_values(log, [b"x" * 50 + bytes([i])])
    assert len(decode_batches(log.read(0, 1 << 20, max_offset=3))) == 3
    assert len(decode_batches(log.read(0, 10))) == 1  # bigger than max_bytes, still one


def test_out_of_range_reads_raise(tmp_path):
    log = PartitionLog.open(str(tmp_path), small_config(), NOW)
    append_values(log, [b"a"])
    with pytest.raises(OffsetOutOfRangeError):
        log.read(5, 100)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(-1, 100)


def test_segments_roll_by_size_and_are_named_by_base_offset(tmp_path):
    log = PartitionLog.open(str(tmp_path), small_config(segment_bytes=300), NOW)
    for i in range(20):
        append_values(log, [b"v" * 60 + str(i).encode()])
    bases = log.segment_base_offsets()
    assert len(bases) > 3
    names = sorted(n for n in os.listdir(tmp_path) if n.endswith(".log"))
    assert names == [f"{b:020d}.log" for b in bases]
    assert [o for o, _ in read_all(log)] == list(range(20))


def test_segments_roll_by_age(tmp_path):
    log = PartitionLog.open(str(tmp_path), small_config(segment_ms=1000), NOW)
    append_values(log, [b"a"], now_ms=NOW)
    append_values(log, [b"b"], now_ms=NOW + 500)
    assert log.segment_count == 1
    append_values(log, [b"c"], now_ms=NOW + 1000)
    assert log.segment_base_offsets() == [0, 2]
    assert log.roll_if_due(NOW + 1500) is False
    assert log.roll_if_due(NOW + 2000) is True


def test_oversized_batch_is_refused_and_nothing_is_stored(tmp_path):
    log = PartitionLog.open(str(tmp_path), small_config(max_message_bytes=200), NOW)
    append_values(log, [b"ok"])
    with pytest.raises(RecordTooLargeError, match=r"exceeds max.message.bytes \(200\)"):
        append_values(log, [b"x" * 300])
    assert log.log_end_offset == 1
    assert [v for _, v in read_all(log)] == [b"ok"]


def test_reopen_after_clean_close_keeps_everything(tmp_path):
    log = PartitionLog.open(str(tmp_path), small_config(segment_bytes=300), NOW)
    for i in range(10):
        append_values(log, [str(i).encode() * 40])
    log.update_high_watermark(10)
    log.close(NOW)
    again = PartitionLog.open(str(tmp_path), small_config(segment_bytes=300), NOW)
    assert (again.log_end_offset, again.high_watermark) == (10, 10)
    assert [o for o, _ in read_all(again)] == list(range(10))
    assert append_values(again, [b"more"]).base_offset == 10


def last_segment_path(tmp_path) -> str:
    return str(tmp_path / sorted(n for n in os.listdir(tmp_path) if n.endswith(".log"))[-1])


def test_torn_tail_is_cut_on_open_and_never_served(tmp_path, caplog):
    log = PartitionLog.open(str(tmp_path), small_config(), NOW)
    append_values(log, [b"a", b"b"])
    append_values(log, [b"c"])
    # simulate a crash mid-write: no clean close, half a batch at the end
    with open(last_segment_path(tmp_path), "ab") as handle:
        handle.write(bytes(make_batch([b"torn"]))[:25])
    again = PartitionLog.open(str(tmp_path), small_config(), NOW)
    assert again.log_end_offset == 3
    assert [v for _, v in read_all(again)] == [b"a", b"b", b"c"]
    assert "torn or corrupt" in caplog.text
    assert append_values(again, [b"d"]).base_offset == 3


def test_flipped_byte_truncates_from_the_damaged_batch(tmp_path):
    log = PartitionLog.open(str(tmp_path), small_config(), NOW)
    append_values(log, [b"a"])
    second = append_values(log, [b"b"])
    append_values(log, [b"c"])
    size_before = os.path.getsize(last_segment_path(tmp_path))
    batch_size = size_before // 3
    with open(last_segment_path(tmp_path), "r+b") as handle:
        handle.seek(batch_size + 40)  # inside the second batch, covered by its CRC
        byte = handle.read(1)
        handle.seek(batch_size + 40)
        handle.write(bytes([byte[0] ^ 0x5A]))
    again = PartitionLog.open(str(tmp_path), small_config(), NOW)
    assert again.log_end_offset == second.base_offset
    assert [v for _, v in read_all(again)] == [b"a"]


def test_corruption_in_an_older_segment_drops_the_segments_after_it(tmp_path):
    config = small_config(segment_bytes=200)
    log = PartitionLog.open(str(tmp_path), config, NOW)
    for i in range(6):
        append_values(log, [str(i).encode() * 60])
    bases = log.segment_base_offsets()
    assert len(bases) >= 3
    # a crash before any flush: the recovery point stays at 0, so everything is scanned
    (tmp_path / "partition.checkpoint").unlink(missing_ok=True)
    second = tmp_path / f"{bases[1]:020d}.log"
    data = bytearray(second.read_bytes())
    data[-5] ^= 0xFF
    second.write_bytes(bytes(data))
    again = PartitionLog.open(str(tmp_path), config, NOW)
    assert again.segment_base_offsets()[-1] <= bases[1]
    assert [o for o, _ in read_all(again)] == list(range(again.log_end_offset))
    assert not (tmp_path / f"{bases[-1]:020d}.log").exists()


def test_damaged_index_is_rebuilt(tmp_path):
    config = small_config(segment_bytes=300, index_interval_bytes=50)
    log = PartitionLog.open(str(tmp_path), config, NOW)
    for i in range(12):
        append_values(log, [str(i).encode() * 30])
    log.close(NOW)
    index = tmp_path / "00000000000000000000.index"
    index.write_bytes(index.read_bytes()[:-3])  # torn entry
    again = PartitionLog.open(str(tmp_path), config, NOW)
    assert [o for o, _ in read_all(again)] == list(range(12))


def test_retention_by_time_deletes_old_segments_below_the_high_watermark(tmp_path):
    config = small_config(segment_bytes=200, retention_ms=10_000)
    log = PartitionLog.open(str(tmp_path), config, NOW)
    for i in range(6):
        append_values(log, [str(i).encode() * 60], timestamp_ms=NOW + i)
    log.update_high_watermark(log.log_end_offset)
    assert log.enforce_retention(NOW + 5_000) == 0
    deleted = log.enforce_retention(NOW + 60_000)
    assert deleted >= 3
    assert log.log_start_offset == log.segment_base_offsets()[0]
    with pytest.raises(OffsetOutOfRangeError):
        log.read(0, 100)


def test_retention_never_deletes_above_the_high_watermark(tmp_path):
    config = small_config(segment_bytes=200, retention_ms=10)
    log = PartitionLog.open(str(tmp_path), config, NOW)
    for i in range(6):
        append_values(log, [str(i).encode() * 60], timestamp_ms=NOW)
    log.update_high_watermark(0)
    assert log.enforce_retention(NOW + 60_000) == 0
    assert log.log_start_offset == 0


def test_retention_by_size_keeps_at_least_the_limit(tmp_path):
    config = small_config(segment_bytes=200, retention_bytes=400)
    log = PartitionLog.open(str(tmp_path), config, NOW)
    for i in range(10):
        append_values(log, [str(i).encode() * 60])
    log.update_high_watermark(log.log_end_offset)
    log.enforce_retention(NOW)
    assert 400 <= log.size_bytes < 400 + 200
    assert log.log_end_offset == 10


def test_expired_active_segment_is_rolled_and_deleted(tmp_path):
    log = PartitionLog.open(str(tmp_path), small_config(retention_ms=100), NOW)
    append_values(log, [b"old"], timestamp_ms=NOW)
    log.update_high_watermark(1)
    assert log.enforce_retention(NOW + 1000) == 1
    assert (log.log_start_offset, log.log_end_offset) == (1, 1)
    assert append_values(log, [b"new"]).base_offset == 1


def test_offset_for_timestamp(tmp_path):
    log = PartitionLog.open(str(tmp_path), small_config(segment_bytes=200), NOW)
    for i in range(8):
        append_values(log, [b"x" * 60], timestamp_ms=1000 + i * 10)
    log.update_high_watermark(log.log_end_offset)
    assert log.offset_for_timestamp(1000) == (0, 1000)
    assert log.offset_for_timestamp(1035) == (4, 1040)
    assert log.offset_for_timestamp(5000) is None


def test_truncate_to_drops_the_tail_and_its_epochs(tmp_path):
    log = PartitionLog.open(str(tmp_path), small_config(segment_bytes=200), NOW)
    for epoch in range(3):
        for _ in range(3):
            append_values(log, [b"y" * 50], epoch=epoch)
    assert log.epochs.entries() == [(0, 0), (1, 3), (2, 6)]
    assert log.truncate_to(4) == 4
    assert log.epochs.entries() == [(0, 0), (1, 3)]
    assert [o for o, _ in read_all(log)] == [0, 1, 2, 3]
    assert append_values(log, [b"z"], epoch=3).base_offset == 4


def test_follower_append_requires_contiguous_offsets(tmp_path):
    leader = PartitionLog.open(str(tmp_path / "leader"), small_config(), NOW)
    follower = PartitionLog.open(str(tmp_path / "follower"), small_config(), NOW)
    append_values(leader, [b"a", b"b"], epoch=4)
    append_values(leader, [b"c"], epoch=5)
    data = leader.read(0, 1 << 20)
    follower.append_as_follower(data, NOW)
    assert follower.log_end_offset == 3
    assert follower.epochs.entries() == [(4, 0), (5, 2)]
    from raftka.records import CorruptBatchError

    with pytest.raises(CorruptBatchError, match="expected 3"):
        follower.append_as_follower(data, NOW)


def test_flush_advances_the_recovery_point_so_reopen_scans_nothing_before_it(tmp_path):
    config = small_config(segment_bytes=200)
    log = PartitionLog.open(str(tmp_path), config, NOW)
    for i in range(6):
        append_values(log, [str(i).encode() * 60])
    assert log.recovery_point == 0
    assert log.flush_if_due(NOW) is True  # rolled segments are not on disk yet
    assert log.recovery_point == log.log_end_offset
    # damage a flushed, non-active segment's index: it is trusted no more than its shape
    again = PartitionLog.open(str(tmp_path), config, NOW)
    assert again.recovery_point == 6
    assert [o for o, _ in read_all(again)] == list(range(6))


def test_flush_messages_is_reported_to_the_caller(tmp_path):
    log = PartitionLog.open(str(tmp_path), small_config(flush_messages=3), NOW)
    append_values(log, [b"a", b"b"])
    assert not log.flush_due_by_count()
    append_values(log, [b"c"])
    assert log.flush_due_by_count()
    log.flush(NOW)
    assert not log.flush_due_by_count() and log.recovery_point == 3


def test_truncating_at_the_end_drops_an_epoch_that_wrote_nothing(tmp_path):
    """Regression: a broker that became leader (recording its epoch at the log end) but wrote
    nothing kept that epoch as a follower, and looped forever on 'diverged' fetches."""
    log = PartitionLog.open(str(tmp_path), small_config(), NOW)
    append_values(log, [b"a"], epoch=0)
    append_values(log, [b"b"], epoch=1)
    log.assign_epoch(2, log.log_end_offset)
    assert log.epochs.entries() == [(0, 0), (1, 1), (2, 2)]
    assert log.truncate_to(2) == 2
    assert log.epochs.entries() == [(0, 0), (1, 1)]
    assert log.last_batch_epoch() == 1
