"""Which timestamp retention.ms measures a segment by: the largest record timestamp it holds,
or, when no record carries one, the log file's last-modified time (Kafka's
LogSegment.largestTimestamp), on the running log and after a restart.

Regression: librdkafka sends messages produced with timestamp -1 as a batch with
baseTimestamp -1 and maxTimestamp 0; taken as "written in 1970", the default 7-day retention
rolled and deleted the active segment at the first check, seconds after the produce.
"""

from __future__ import annotations

import os
import struct
import time

import pytest

from raftka.broker.log.config import LogConfig
from raftka.broker.log.log import PartitionLog
from raftka.broker.log.segment import TIME_INDEX_SUFFIX, segment_file_name
from raftka.records import decode_batches
from tests.unit.log.helpers import (
    append_raw,
    append_values,
    batch_without_timestamps,
    small_config,
)

DAY_MS = 24 * 3600 * 1000
WEEK_MS = 7 * DAY_MS
# librdkafka's header for untimestamped records, and the same batch as Kafka would store it.
HEADER_MAXIMA = pytest.mark.parametrize(
    "header_max", [0, -1], ids=["librdkafka-max-0", "max-minus-1"]
)


def wall_ms() -> int:
    """The file system stamps mtimes with the real clock, so these tests use it too."""
    return int(time.time() * 1000)


def count_readable(log: PartitionLog) -> int:
    """How many records a reader gets from the log start on."""
    count = 0
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        records = decode_batches(data, from_offset=offset)
        assert records
        count += len(records)
        offset = records[-1].offset + 1
    return count


def fill_without_timestamps(log: PartitionLog, batches: int, header_max: int) -> None:
    for i in range(batches):
        append_raw(
            log,
            batch_without_timestamps([str(i).encode() * 60], header_max_timestamp=header_max),
            wall_ms(),
        )
    log.update_high_watermark(log.log_end_offset)


@HEADER_MAXIMA
def test_fresh_records_without_timestamps_survive_the_default_retention(tmp_path, header_max):
    log = PartitionLog.open(str(tmp_path), LogConfig(), wall_ms())  # retention.ms: 7 days
    append_raw(
        log, batch_without_timestamps([b"a", b"b"], header_max_timestamp=header_max), wall_ms()
    )
    log.update_high_watermark(log.log_end_offset)
    assert log.enforce_retention(wall_ms()) == 0
    assert (log.log_start_offset, log.log_end_offset) == (0, 2)
    assert count_readable(log) == 2


@HEADER_MAXIMA
def test_rolled_segments_without_timestamps_survive_too(tmp_path, header_max):
    log = PartitionLog.open(
        str(tmp_path), small_config(segment_bytes=200, retention_ms=WEEK_MS), wall_ms()
    )
    fill_without_timestamps(log, 6, header_max)
    assert log.segment_count >= 3
    assert log.enforce_retention(wall_ms()) == 0
    assert log.log_start_offset == 0 and count_readable(log) == 6


def test_segments_without_timestamps_expire_by_the_files_last_modified_time(tmp_path):
    # Kafka's rule, so such data does not live for ever either: the oldest file is dated
    # 8 days back and goes; the others were written just now and stay.
    log = PartitionLog.open(
        str(tmp_path), small_config(segment_bytes=200, retention_ms=WEEK_MS), wall_ms()
    )
    fill_without_timestamps(log, 6, header_max=0)
    bases = log.segment_base_offsets()
    eight_days_ago = time.time() - 8 * 24 * 3600
    os.utime(tmp_path / segment_file_name(bases[0], ".log"), (eight_days_ago, eight_days_ago))
    assert log.enforce_retention(wall_ms()) == 1
    assert log.log_start_offset == bases[1]


def test_a_segment_goes_only_when_its_newest_record_is_past_retention(tmp_path):
    now = wall_ms()
    month_ago = now - 30 * DAY_MS
    mixed = PartitionLog.open(str(tmp_path / "mixed"), LogConfig(), now)
    append_values(mixed, [b"old"], now_ms=now, timestamp_ms=month_ago)
    append_values(mixed, [b"new"], now_ms=now, timestamp_ms=now)
    append_raw(mixed, batch_without_timestamps([b"none"], header_max_timestamp=0), now)
    mixed.update_high_watermark(mixed.log_end_offset)
    assert mixed.enforce_retention(now) == 0
    # Records produced with old timestamps are deleted, as Kafka does: rightly, since the
    # newest of them is older than retention.ms. An untimestamped batch beside them does
    # not date the segment (Kafka: the largest record timestamp, when there is one).
    old = PartitionLog.open(str(tmp_path / "old"), LogConfig(), now)
    append_values(old, [b"old"], now_ms=now, timestamp_ms=month_ago)
    append_raw(old, batch_without_timestamps([b"none"], header_max_timestamp=0), now)
    old.update_high_watermark(old.log_end_offset)
    assert old.enforce_retention(now) == 1
    assert (old.log_start_offset, old.log_end_offset) == (2, 2)


def test_log_append_time_topics_date_records_by_the_brokers_clock(tmp_path):
    now = wall_ms()
    log = PartitionLog.open(str(tmp_path), LogConfig(log_append_time=True), now)
    append_raw(log, batch_without_timestamps([b"a"], header_max_timestamp=0), now)
    append_values(log, [b"b"], now_ms=now, timestamp_ms=now - 30 * DAY_MS)
    log.update_high_watermark(log.log_end_offset)
    assert log.enforce_retention(now) == 0
    assert log.enforce_retention(now + WEEK_MS + 1) == 1


@HEADER_MAXIMA
def test_a_restart_keeps_fresh_segments_without_timestamps(tmp_path, header_max):
    config = small_config(segment_bytes=200, retention_ms=WEEK_MS)
    log = PartitionLog.open(str(tmp_path), config, wall_ms())
    fill_without_timestamps(log, 6, header_max)
    log.close(wall_ms())
    # Every segment but the last is below the recovery point: opened from its indexes.
    again = PartitionLog.open(str(tmp_path), config, wall_ms())
    assert again.recovery_point == again.log_end_offset == 6
    assert again.enforce_retention(wall_ms()) == 0
    assert again.log_start_offset == 0 and count_readable(again) == 6


def test_a_restart_ignores_time_index_entries_that_took_librdkafkas_0_for_a_timestamp(tmp_path):
    # Logs written before this fix hold time-index entries keyed 0 for such batches; trusted
    # on open, they dated the segment 1970 again.
    config = small_config(segment_bytes=200, retention_ms=WEEK_MS)
    log = PartitionLog.open(str(tmp_path), config, wall_ms())
    fill_without_timestamps(log, 6, header_max=0)
    bases = log.segment_base_offsets()
    log.close(wall_ms())
    for base in bases[:-1]:
        path = tmp_path / segment_file_name(base, TIME_INDEX_SUFFIX)
        path.write_bytes(struct.pack(">qi", 0, 0))
    again = PartitionLog.open(str(tmp_path), config, wall_ms())
    assert again.enforce_retention(wall_ms()) == 0
    assert again.log_start_offset == 0 and count_readable(again) == 6


def test_a_restart_with_a_lost_time_index_finds_the_largest_timestamp_by_scanning(tmp_path):
    # The newest record comes first, then records produced with old timestamps. With its time
    # index gone, the tail after the last offset-index entry holds only the old ones.
    now = wall_ms()
    config = small_config(segment_bytes=600, index_interval_bytes=1, retention_ms=WEEK_MS)
    log = PartitionLog.open(str(tmp_path), config, now)
    append_values(log, [b"n" * 60], now_ms=now, timestamp_ms=now)
    for _ in range(8):
        append_values(log, [b"o" * 60], now_ms=now, timestamp_ms=now - 30 * DAY_MS)
    log.update_high_watermark(log.log_end_offset)
    first, second = log.segment_base_offsets()[:2]
    log.close(now)
    os.unlink(tmp_path / segment_file_name(first, TIME_INDEX_SUFFIX))
    again = PartitionLog.open(str(tmp_path), config, now)
    assert again.segment_base_offsets()[:2] == [first, second]
    # The first segment's newest record is fresh: it stays, and so does all after it.
    assert again.enforce_retention(now) == 0
    assert again.log_start_offset == 0


def test_lookup_by_timestamp_skips_batches_without_timestamps(tmp_path):
    # The same misreading of librdkafka's header: its "0" matched a lookup for timestamp 0,
    # none of its records did, and the search gave up on the segment.
    now = wall_ms()
    log = PartitionLog.open(str(tmp_path), LogConfig(), now)
    append_raw(log, batch_without_timestamps([b"a"], header_max_timestamp=0), now)
    append_values(log, [b"b"], now_ms=now, timestamp_ms=1000)
    log.update_high_watermark(log.log_end_offset)
    assert log.offset_for_timestamp(0) == (1, 1000)


def test_a_restart_rebuilds_a_time_index_that_points_past_the_log(tmp_path):
    # The other way round: an entry beyond the last offset dated month-old data "now" and
    # kept it past retention. Such an index cannot be trusted; the segment is rebuilt.
    now = wall_ms()
    config = small_config(segment_bytes=200, retention_ms=WEEK_MS)
    log = PartitionLog.open(str(tmp_path), config, now)
    for _ in range(6):
        append_values(log, [b"o" * 60], now_ms=now, timestamp_ms=now - 30 * DAY_MS)
    log.update_high_watermark(log.log_end_offset)
    first = log.segment_base_offsets()[0]
    log.close(now)
    (tmp_path / segment_file_name(first, TIME_INDEX_SUFFIX)).write_bytes(
        struct.pack(">qi", now, 10_000)
    )
    again = PartitionLog.open(str(tmp_path), config, now)
    segments = again.segment_count
    assert segments > 1
    assert again.enforce_retention(now) == segments  # all month-old, the active one too
    assert again.log_start_offset == again.log_end_offset == 6
