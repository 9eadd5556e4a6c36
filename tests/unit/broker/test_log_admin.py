"""DeleteRecords' decision (plan_delete), DescribeLogDirs' offset lag, and what advancing
a log's start offset does to reads and to a reopened log."""

from __future__ import annotations

import pytest

from raftka.broker.log.log import OffsetOutOfRangeError, PartitionLog
from raftka.broker.log_admin import DeletePlan, offset_lag, plan_delete
from raftka.proto.raftka.v1 import common_pb2
from tests.unit.log.helpers import append_values, small_config

Code = common_pb2.ErrorCode
NOW = 1_700_000_000_000


@pytest.mark.parametrize(("requested", "start", "hw", "plan"), [
    (5, 0, 10, DeletePlan(target=5)),
    (10, 0, 10, DeletePlan(target=10)),
    (-1, 2, 10, DeletePlan(target=10)),        # -1: up to the high watermark
    (1, 4, 10, DeletePlan(target=4)),          # below the start: nothing moves
])
def test_plan_delete_targets(requested, start, hw, plan):
    assert plan_delete(requested, start, hw) == plan


@pytest.mark.parametrize("requested", [11, -2, 1 << 40])
def test_plan_delete_beyond_the_high_watermark_is_offset_out_of_range(requested):
    plan = plan_delete(requested, 0, 10)
    assert plan.code == Code.OFFSET_OUT_OF_RANGE and "high watermark" in plan.message


def test_offset_lag():
    assert offset_lag(True, 5, 99) == 0
    assert offset_lag(False, 5, 9) == 4
    assert offset_lag(False, 12, 9) == 0
    assert offset_lag(False, 5, -1) == -1


def test_advanced_start_refuses_reads_below_it_and_survives_reopening(tmp_path):
    config = small_config(segment_bytes=200)
    log = PartitionLog.open(str(tmp_path), config, NOW)
    for i in range(8):
        append_values(log, [str(i).encode() * 60])
    log.update_high_watermark(8)
    segments_before = log.segment_count
    assert log.advance_start_offset(5) is True
    assert log.log_start_offset == 5 and log.segment_count < segments_before
    with pytest.raises(OffsetOutOfRangeError):
        log.read(4, 1 << 20)
    assert log.read(5, 1 << 20)
    log.close(NOW)
    again = PartitionLog.open(str(tmp_path), config, NOW)
    assert again.log_start_offset == 5
    with pytest.raises(OffsetOutOfRangeError):
        again.read(2, 1 << 20)
