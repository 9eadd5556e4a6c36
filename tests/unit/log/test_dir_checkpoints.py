"""One set of checkpoint files per log directory: what a restart recovers from them, what is
written at once (a moved log start offset, offsets that went down) and what waits for the
periodic round, and older data directories with a `partition.checkpoint` per partition."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raftka.broker.log.checkpoint import CHECKPOINT_FILE
from raftka.broker.log.dir_checkpoints import (
    HIGH_WATERMARK_FILE,
    LOG_START_FILE,
    RECOVERY_POINT_FILE,
    CheckpointFormatError,
    DirectoryCheckpoints,
    format_offsets,
    parse_offsets,
    read_offsets,
)
from raftka.broker.log.log import PartitionLog
from raftka.broker.replica_manager import open_checkpointed_log
from tests.unit.log.helpers import append_values, small_config

NOW = 1_700_000_000_000
CONFIG = small_config(segment_bytes=400)


def start(log_dir: Path, names=("t-0", "t-1")):
    """What a starting broker does: read the directory's checkpoints, open each log."""
    checkpoints = DirectoryCheckpoints(str(log_dir))
    logs = {}
    for name in names:
        topic, partition = name.rsplit("-", 1)
        logs[name] = open_checkpointed_log(
            checkpoints, (topic, int(partition)), str(log_dir / name), CONFIG, NOW)
    return checkpoints, logs


def crash(logs) -> None:
    """The process dies: nothing more is flushed or checkpointed."""
    for partition_log in logs.values():
        for segment in partition_log._segments:
            segment.close()


def fill(partition_log: PartitionLog, count: int) -> None:
    for i in range(count):
        append_values(partition_log, [str(i).encode() * 30])


def test_format_round_trip_and_damage_named():
    offsets = {("a", 0): 5, ("a", 1): 0, ("b.c_d-e", 12): 10**12}
    data = format_offsets(offsets)
    assert data.splitlines()[:2] == [b"0", b"3"]
    assert parse_offsets(data, "f") == offsets
    for bad, fragment in [
        (b"", r"0 line\(s\)"),
        (b"1\n0\n", "version '1'"),
        (b"0\nx\n", "count 'x'"),
        (b"0\n2\na 0 1\n", "says 2 entries, holds 1"),
        (b"0\n1\na b 1\n", "line 3"),
        (b"0\n1\na 0 z\n", "offset 'z'"),
    ]:
        with pytest.raises(CheckpointFormatError, match=fragment):
            parse_offsets(bad, "f")


def test_a_damaged_file_is_ignored_not_fatal(tmp_path):
    (tmp_path / HIGH_WATERMARK_FILE).write_bytes(b"0\n5\n")
    assert read_offsets(str(tmp_path / HIGH_WATERMARK_FILE)) is None
    assert read_offsets(str(tmp_path / "missing")) is None


def test_a_restart_recovers_offsets_from_the_directory_files(tmp_path):
    checkpoints, logs = start(tmp_path)
    fill(logs["t-0"], 20)
    fill(logs["t-1"], 6)
    logs["t-0"].update_high_watermark(15)
    logs["t-1"].update_high_watermark(6)
    logs["t-0"].flush(NOW)
    assert logs["t-0"].advance_start_offset(9)  # DeleteRecords: written at once
    assert checkpoints.write_if_changed() == 2  # the high watermarks and recovery points
    crash(logs)
    assert not list(tmp_path.glob(f"*/{CHECKPOINT_FILE}"))  # no per-partition files
    lines = (tmp_path / HIGH_WATERMARK_FILE).read_text().splitlines()
    assert lines == ["0", "2", "t 0 15", "t 1 6"]
    _, again = start(tmp_path)
    assert (again["t-0"].high_watermark, again["t-0"].log_start_offset,
            again["t-0"].recovery_point) == (15, 9, 20)
    assert (again["t-1"].high_watermark, again["t-1"].log_start_offset) == (6, 0)


def test_only_what_changed_is_written_and_the_high_watermark_may_lag(tmp_path):
    checkpoints, logs = start(tmp_path)
    assert checkpoints.write_if_changed() == 3  # none of the files existed
    fill(logs["t-0"], 5)
    logs["t-0"].update_high_watermark(5)
    assert checkpoints.write_if_changed() == 1  # only the high watermarks moved
    assert checkpoints.write_if_changed() == 0
    written = checkpoints.files_written
    fill(logs["t-0"], 5)
    logs["t-0"].update_high_watermark(10)  # not written before the crash
    crash(logs)
    assert checkpoints.files_written == written
    _, again = start(tmp_path)
    assert again["t-0"].high_watermark == 5 and again["t-0"].log_end_offset == 10


def test_a_log_start_offset_never_goes_back_across_a_crash(tmp_path):
    _, logs = start(tmp_path)
    fill(logs["t-0"], 30)
    logs["t-0"].update_high_watermark(30)
    assert logs["t-0"].advance_start_offset(18)  # mid-segment: files alone cannot tell
    assert logs["t-0"].first_segment_base_offset == 17
    crash(logs)  # no periodic round ran
    assert read_offsets(str(tmp_path / LOG_START_FILE)) == {("t", 0): 18, ("t", 1): 0}
    _, again = start(tmp_path)
    assert again["t-0"].log_start_offset == 18


def test_a_recovery_point_lowered_by_truncation_is_written_at_once(tmp_path):
    checkpoints, logs = start(tmp_path)
    fill(logs["t-0"], 30)
    logs["t-0"].flush(NOW)
    checkpoints.write_if_changed()
    assert read_offsets(str(tmp_path / RECOVERY_POINT_FILE))[("t", 0)] == 30
    logs["t-0"].truncate_to(12)  # a follower's divergent tail
    # What was synced past 12 is gone; new appends there are not synced yet.
    assert read_offsets(str(tmp_path / RECOVERY_POINT_FILE))[("t", 0)] == 12


def test_a_new_partition_of_a_deleted_ones_name_does_not_inherit_its_offsets(tmp_path):
    checkpoints, logs = start(tmp_path)
    fill(logs["t-0"], 30)
    logs["t-0"].update_high_watermark(30)
    logs["t-0"].flush(NOW)
    assert logs["t-0"].advance_start_offset(20)
    checkpoints.write_if_changed()
    logs["t-0"].delete()
    checkpoints.forget(("t", 0))
    # Recreated at once (no round in between); the files still name the old one.
    fresh = open_checkpointed_log(checkpoints, ("t", 0), str(tmp_path / "t-0"), CONFIG, NOW)
    assert (fresh.log_start_offset, fresh.high_watermark, fresh.recovery_point) == (0, 0, 0)
    fill(fresh, 5)
    crash({"t-0": fresh, "t-1": logs["t-1"]})
    _, again = start(tmp_path)
    assert (again["t-0"].log_start_offset, again["t-0"].high_watermark) == (0, 0)
    assert again["t-0"].log_end_offset == 5


def test_an_older_data_directory_loads_and_moves_to_the_directory_files(tmp_path):
    # The layout before: every partition's own partition.checkpoint.
    for name in ("t-0", "t-1"):
        old = PartitionLog.open(str(tmp_path / name), CONFIG, NOW)
        fill(old, 20)
        old.update_high_watermark(14)
        old.flush(NOW)
        old.advance_start_offset(4)
        old.close(NOW)
        stored = json.loads((tmp_path / name / CHECKPOINT_FILE).read_text())
        assert stored == {"high_watermark": 14, "log_start_offset": 4, "recovery_point": 20}
    checkpoints, logs = start(tmp_path)
    for partition_log in logs.values():
        assert (partition_log.high_watermark, partition_log.log_start_offset,
                partition_log.recovery_point) == (14, 4, 20)
    assert checkpoints.write_if_changed() == 3
    assert not list(tmp_path.glob(f"*/{CHECKPOINT_FILE}"))  # moved over, then removed
    crash(logs)
    _, again = start(tmp_path)
    assert {(p.high_watermark, p.log_start_offset, p.recovery_point)
            for p in again.values()} == {(14, 4, 20)}


def test_retention_rewrites_no_file_the_deleted_segments_say_it_already(tmp_path):
    checkpoints, logs = start(tmp_path)
    fill(logs["t-0"], 30)
    logs["t-0"].update_high_watermark(30)
    checkpoints.write_if_changed()
    written = checkpoints.files_written
    assert logs["t-0"].advance_start_offset(17)  # on a segment boundary, as retention cuts
    assert checkpoints.files_written == written
    crash(logs)
    _, again = start(tmp_path)
    assert again["t-0"].log_start_offset == 17
