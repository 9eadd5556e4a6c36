"""load_log: opening a partition directory, recovering torn and corrupt tails, trimming state."""

from __future__ import annotations

import json
import os

import pytest

from raftka.broker.log.checkpoint import CHECKPOINT_FILE, EPOCH_CHECKPOINT_FILE
from raftka.broker.log.loader import LoadedLog, load_log
from raftka.broker.log.log import PartitionLog
from tests.unit.log.helpers import append_values, make_batch, small_config

NOW = 1_700_000_000_000


@pytest.fixture
def loaded():
    opened: list[LoadedLog] = []

    def load(directory, config=None, now_ms=NOW) -> LoadedLog:
        result = load_log(str(directory), config or small_config(), now_ms)
        opened.append(result)
        return result

    yield load
    for result in opened:
        for segment in result.segments:
            segment.close()


def log_files(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(".log"))


def write_log(directory, config, batches: int, *, close: bool = True) -> list[int]:
    """`batches` one-record batches at offsets 0.. (epoch = offset // 2); the segment bases."""
    log = PartitionLog.open(str(directory), config, NOW)
    for i in range(batches):
        append_values(log, [str(i).encode() * 60], epoch=i // 2)
    log.update_high_watermark(log.log_end_offset)
    bases = log.segment_base_offsets()
    if close:
        log.close(NOW)
    else:
        log.write_checkpoint()  # the offsets, but no flush: the recovery point stays at 0
    return bases


def test_an_empty_directory_gives_one_empty_segment_at_zero(tmp_path, loaded):
    result = loaded(tmp_path)
    assert [s.base_offset for s in result.segments] == [0]
    assert (result.log_start_offset, result.high_watermark, result.recovery_point) == (0, 0, 0)
    assert result.log_end_offset == 0
    assert (result.truncated_at, result.truncated_bytes, result.deleted_segments) == (None, 0, ())
    assert result.epochs.entries() == []
    assert result.segments[0].first_append_ms is None
    assert log_files(tmp_path) == ["00000000000000000000.log"]


def test_a_directory_emptied_by_retention_restarts_at_the_stored_log_start(tmp_path, loaded):
    (tmp_path / CHECKPOINT_FILE).write_text(
        json.dumps({"log_start_offset": 42, "high_watermark": 42, "recovery_point": 42})
    )
    result = loaded(tmp_path)
    assert [s.base_offset for s in result.segments] == [42]
    assert (result.log_start_offset, result.high_watermark, result.recovery_point) == (42, 42, 42)


def test_a_clean_log_loads_as_it_was_closed(tmp_path, loaded):
    config = small_config(segment_bytes=300)
    bases = write_log(tmp_path, config, 10)
    result = loaded(tmp_path, config, NOW + 5)
    assert [s.base_offset for s in result.segments] == bases
    assert (result.log_end_offset, result.high_watermark, result.recovery_point) == (10, 10, 10)
    assert result.truncated_at is None
    assert result.epochs.entries() == [(e, 2 * e) for e in range(5)]
    assert result.segments[-1].first_append_ms == NOW + 5  # segment.ms counts from the open


def test_a_torn_tail_is_cut_and_reported(tmp_path, loaded, caplog):
    config = small_config()
    write_log(tmp_path, config, 3, close=False)
    last = tmp_path / log_files(tmp_path)[-1]
    size = last.stat().st_size
    with open(last, "ab") as handle:
        handle.write(bytes(make_batch([b"torn"]))[:25])
    result = loaded(tmp_path, config)
    assert (result.truncated_at, result.truncated_bytes) == (3, 25)
    assert result.log_end_offset == 3
    assert last.stat().st_size == size
    assert "torn or corrupt" in caplog.text


def test_a_bad_crc_cuts_from_the_damaged_batch_and_trims_state(tmp_path, loaded):
    config = small_config()
    write_log(tmp_path, config, 6, close=False)
    last = tmp_path / log_files(tmp_path)[-1]
    data = bytearray(last.read_bytes())
    batch_bytes = len(data) // 6
    data[4 * batch_bytes + 40] ^= 0x5A  # inside batch 4's CRC-covered bytes
    last.write_bytes(bytes(data))
    result = loaded(tmp_path, config)
    assert (result.truncated_at, result.truncated_bytes) == (4, 2 * batch_bytes)
    assert result.log_end_offset == 4
    # the stored high watermark (6) and epochs are clamped to what survived
    assert result.high_watermark == 4
    assert result.epochs.entries() == [(0, 0), (1, 2)]
    stored = json.loads((tmp_path / EPOCH_CHECKPOINT_FILE).read_text())
    assert stored == {"entries": [[0, 0], [1, 2]]}


def test_segments_after_a_cut_are_deleted_and_reported(tmp_path, loaded):
    config = small_config(segment_bytes=200)
    bases = write_log(tmp_path, config, 6, close=False)
    assert len(bases) >= 3
    second = tmp_path / f"{bases[1]:020d}.log"
    data = bytearray(second.read_bytes())
    data[-5] ^= 0xFF
    second.write_bytes(bytes(data))
    result = loaded(tmp_path, config)
    assert result.truncated_at is not None and result.truncated_at < bases[2]
    assert result.deleted_segments == tuple(bases[2:])
    assert [s.base_offset for s in result.segments] == bases[:2]
    assert log_files(tmp_path) == [f"{b:020d}.log" for b in bases[:2]]
    assert not any(n.startswith(f"{bases[-1]:020d}") for n in os.listdir(tmp_path))


def test_orphan_indexes_and_temp_files_are_removed(tmp_path, loaded):
    config = small_config()
    write_log(tmp_path, config, 2)
    for name in ("00000000000000000099.index", "00000000000000000099.timeindex", "x.tmp"):
        (tmp_path / name).write_bytes(b"junk")
    loaded(tmp_path, config)
    assert set(os.listdir(tmp_path)) == {
        "00000000000000000000.index",
        "00000000000000000000.log",
        "00000000000000000000.timeindex",
        CHECKPOINT_FILE,
        EPOCH_CHECKPOINT_FILE,
    }


# The RecordBatch v2 CRC covers the bytes from `attributes` on: a flipped byte in the base
# offset (bytes 0-7) or the partition leader epoch (bytes 12-15) passes it. The fault harness
# found both (seed 41, torn-tail): a leader epoch of 16711686 kept and served as if written by
# that leader, and a base offset of 1095216662984 that made the follower's log end offset
# leap, so it could never truncate back and rejoin the ISR.
BASE_OFFSET_BYTE = 3
LEADER_EPOCH_BYTE = 13


def _flip_in_batch(path, batch: int, batch_bytes: int, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[batch * batch_bytes + at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_flipped_leader_epoch_byte_cuts_the_log_at_that_batch(tmp_path, loaded, caplog):
    config = small_config(segment_bytes=1 << 20)
    write_log(tmp_path, config, 6, close=False)
    last = tmp_path / log_files(tmp_path)[-1]
    batch_bytes = last.stat().st_size // 6
    _flip_in_batch(last, 3, batch_bytes, LEADER_EPOCH_BYTE)
    result = loaded(tmp_path, config)
    assert (result.truncated_at, result.truncated_bytes) == (3, 3 * batch_bytes)
    assert result.epochs.entries() == [(0, 0), (1, 2)]
    assert "leader epoch" in caplog.text


def test_a_flipped_base_offset_byte_cuts_the_log_at_that_batch(tmp_path, loaded, caplog):
    config = small_config(segment_bytes=1 << 20)
    write_log(tmp_path, config, 6, close=False)
    last = tmp_path / log_files(tmp_path)[-1]
    batch_bytes = last.stat().st_size // 6
    _flip_in_batch(last, 5, batch_bytes, BASE_OFFSET_BYTE)  # the last batch: nothing follows
    result = loaded(tmp_path, config)
    assert (result.truncated_at, result.truncated_bytes) == (5, batch_bytes)
    assert result.log_end_offset == 5
    assert "base offset" in caplog.text


def test_a_flushed_segment_that_fails_its_checks_is_cut_and_the_later_ones_go(tmp_path, loaded):
    """A segment below the recovery point is trusted, but when its tail does not check out
    it is recovered, and a cut there must delete the segments after it, as any cut does:
    otherwise the log has a gap (offsets missing in the middle)."""
    config = small_config(segment_bytes=400)
    bases = write_log(tmp_path, config, 12, close=True)
    assert len(bases) >= 3
    first = tmp_path / f"{bases[0]:020d}.log"
    size = first.stat().st_size
    os.truncate(first, size - 10)  # the last batch's header is still whole; its body is not
    result = loaded(tmp_path, config)
    assert result.truncated_at is not None and result.truncated_at < bases[1]
    assert result.deleted_segments == tuple(bases[1:])
    assert [s.base_offset for s in result.segments] == bases[:1]
    assert result.log_end_offset == result.truncated_at
