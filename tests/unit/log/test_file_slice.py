"""Reads as file slices (for sendfile) must name exactly the bytes a copying read returns."""

from __future__ import annotations

import pytest

from raftka.broker.log.log import OffsetOutOfRangeError, PartitionLog
from raftka.records import decode_batches
from tests.unit.log.helpers import append_values, small_config

NOW = 1_700_000_000_000


def filled_log(tmp_path) -> PartitionLog:
    # Batches of 1-4 records of varied sizes, over several segments and index entries.
    log = PartitionLog.open(str(tmp_path), small_config(index_interval_bytes=128), NOW)
    for i in range(60):
        append_values(log, [bytes([i]) * (10 + 7 * (i % 5))] * (1 + i % 4))
    return log


def sliced(log: PartitionLog, offset: int, max_bytes: int, **kwargs) -> bytes:
    found = log.read_slice(offset, max_bytes, **kwargs)
    if found is None:
        return b""
    with found:
        return found.read()


@pytest.mark.parametrize("max_bytes", [1, 80, 150, 333, 700, 1000, 1 << 20])
def test_a_slice_holds_the_bytes_a_read_returns(tmp_path, max_bytes):
    log = filled_log(tmp_path)
    for offset in range(0, log.log_end_offset + 1, 3):
        for max_offset in (None, offset + 5, log.log_end_offset - 2):
            expected = log.read(offset, max_bytes, max_offset)
            assert sliced(log, offset, max_bytes, max_offset=max_offset) == expected
            assert sliced(
                log, offset, max_bytes, max_offset=max_offset, min_one_batch=False
            ) == log.read(offset, max_bytes, max_offset, min_one_batch=False)


def test_a_cut_read_ends_on_a_whole_batch_within_max_bytes(tmp_path):
    log = filled_log(tmp_path)
    data = log.read(0, 700)
    assert 0 < len(data) <= 700
    records = decode_batches(data)  # whole batches only: decoding checks every CRC
    assert records[0].offset == 0


def test_out_of_range_and_empty_slices(tmp_path):
    log = filled_log(tmp_path)
    with pytest.raises(OffsetOutOfRangeError):
        log.read_slice(log.log_end_offset + 1, 100)
    assert log.read_slice(log.log_end_offset, 100) is None


def test_a_slice_stays_readable_after_its_segment_is_deleted(tmp_path):
    log = filled_log(tmp_path)
    found = log.read_slice(0, 1 << 20)
    assert found is not None
    expected = log.read(0, 1 << 20)
    log.delete()  # closes and unlinks every segment, as topic deletion does
    with found:
        assert found.read() == expected
