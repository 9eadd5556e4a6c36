"""The segment keeps the positions of its last appended batches so tail reads skip the
header walk; every answer must be the one the walk over the file gives. Checked against a
second LogSegment opened on the same files (it has no kept positions, so it walks), after
appends of one- and many-batch writes, truncations and a reopen, for every offset."""

from __future__ import annotations

import random
import struct

from raftka.broker.log.log import PartitionLog
from raftka.broker.log.segment import RECENT_BATCHES_MAX, LogSegment
from raftka.records import split_batches
from tests.unit.log.helpers import make_batch, small_config

NOW_MS = 1_700_000_000_000


def walked(segment: LogSegment, directory: str, index_interval_bytes: int) -> LogSegment:
    fresh = LogSegment(directory, segment.base_offset, index_interval_bytes)
    fresh.load()
    assert not fresh._recent_lasts  # nothing kept: every lookup walks headers
    return fresh


def assert_same_answers(segment: LogSegment, fresh: LogSegment) -> None:
    end = segment.next_offset
    for offset in range(segment.base_offset, end + 3):
        assert segment.position_of(offset) == fresh.position_of(offset), offset
        for upper in (offset, end, end + 1):
            assert segment.read_range(offset, 1 << 20, upper, True) == fresh.read_range(
                offset, 1 << 20, upper, True), (offset, upper)


def test_kept_positions_answer_as_the_header_walk_does(tmp_path):
    rng = random.Random(7)
    directory = str(tmp_path)
    interval = 512
    segment = LogSegment(directory, 0, interval)
    offset = 0
    for round_ in range(12):
        for _ in range(rng.randint(1, RECENT_BATCHES_MAX)):
            count = rng.randint(1, 4)
            batches = [make_batch([b"v" * rng.randint(1, 40) for _ in range(count)])
                       for _ in range(rng.randint(1, 3))]
            data = bytearray()
            for batch in batches:
                # offsets as the log assigns them
                struct.pack_into(">q", batch, 0, offset)
                offset += count
                data += batch
            segment.append(data, split_batches(data), 0)
        assert_same_answers(segment, walked(segment, directory, interval))
        if round_ % 3 == 2:  # cut somewhere in the tail, then keep appending
            cut = rng.randint(max(0, offset - 30), offset)
            segment.truncate_to(cut)
            offset = segment.next_offset
            assert not segment._recent_lasts
            assert_same_answers(segment, walked(segment, directory, interval))


def test_tail_reads_of_a_log_after_reopen_and_truncation(tmp_path):
    config = small_config(segment_bytes=1 << 20, index_interval_bytes=256)
    log = PartitionLog.open(str(tmp_path), config, NOW_MS)
    for i in range(300):
        data = make_batch([str(i).encode() * 5])
        log.append_as_leader(data, split_batches(data), 0, NOW_MS)
    tail = [log.read(o, 1) for o in range(250, 300)]
    log.truncate_to(280)
    assert log.log_end_offset == 280
    assert log.read(279, 1) == tail[29]
    assert log.read(280, 1 << 20) == b""
    log.close()
    reopened = PartitionLog.open(str(tmp_path), config, NOW_MS)
    assert [reopened.read(o, 1) for o in range(250, 280)] == tail[:30]
    reopened.close()
