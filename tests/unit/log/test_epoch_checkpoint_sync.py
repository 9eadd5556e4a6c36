"""When the leader-epoch checkpoint reaches the disk (Kafka's KAFKA-15046): a new epoch is
written at once but synced at the log's next flush, before the recovery point passes it; and
what the loader does when a power loss took the file's last writes, or the whole file."""

from __future__ import annotations

import json
import os

import pytest

from raftka.broker.log import checkpoint
from raftka.broker.log.checkpoint import CHECKPOINT_FILE, EPOCH_CHECKPOINT_FILE
from raftka.broker.log.loader import load_log
from raftka.broker.log.log import PartitionLog
from tests.unit.log.helpers import append_values, small_config

NOW = 1_700_000_000_000


@pytest.fixture
def synced(monkeypatch) -> list[str]:
    """The file names fsynced, in order (a directory's name for a directory fsync)."""
    names: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        names.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(checkpoint.os, "fsync", recording_fsync)
    return names


def stored_epochs(directory) -> list[list[int]]:
    return json.loads((directory / EPOCH_CHECKPOINT_FILE).read_text())["entries"]


def test_a_new_epoch_is_in_the_file_at_once_without_waiting_for_the_disk(tmp_path, synced):
    log = PartitionLog.open(str(tmp_path), small_config(), NOW)
    for epoch in range(3):
        append_values(log, [b"x" * 50], epoch=epoch)
    log.assign_epoch(5, log.log_end_offset)  # a new leadership, before its first batch
    # A process crash (kill -9) keeps the page cache: the file already says everything.
    assert stored_epochs(tmp_path) == [[0, 0], [1, 1], [2, 2], [5, 3]]
    assert synced == []
    log.close(NOW)


def test_a_flush_syncs_the_epochs_before_the_recovery_point_moves(tmp_path, synced):
    log = PartitionLog.open(str(tmp_path), small_config(), NOW)
    append_values(log, [b"a" * 50], epoch=0)
    append_values(log, [b"b" * 50], epoch=1)
    log.flush(NOW)
    epoch_sync = synced.index(EPOCH_CHECKPOINT_FILE)
    checkpoint_sync = synced.index(f"{CHECKPOINT_FILE}.tmp")
    assert epoch_sync < checkpoint_sync and log.recovery_point == 2
    del synced[:]
    append_values(log, [b"c" * 50], epoch=1)  # no new epoch: nothing more to sync
    log.flush(NOW)
    assert EPOCH_CHECKPOINT_FILE not in synced
    log.close(NOW)


def test_a_clean_close_syncs_an_epoch_that_has_no_batch_yet(tmp_path, synced):
    log = PartitionLog.open(str(tmp_path), small_config(), NOW)
    append_values(log, [b"a" * 50], epoch=0)
    log.flush(NOW)
    del synced[:]
    log.assign_epoch(3, log.log_end_offset)
    log.close(NOW)
    assert EPOCH_CHECKPOINT_FILE in synced
    assert stored_epochs(tmp_path) == [[0, 0], [3, 1]]


def crashed_log(directory, *, flushed: int, total: int, epoch_every: int = 2) -> None:
    """One-record batches, epoch = offset // epoch_every, flushed after `flushed` of them,
    then the process dies (no close): offsets `flushed`.. are not on disk for sure."""
    log = PartitionLog.open(str(directory), small_config(), NOW)
    for i in range(total):
        append_values(log, [str(i).encode() * 40], epoch=i // epoch_every)
        if i + 1 == flushed:
            log.flush(NOW)
            synced_version = (directory / EPOCH_CHECKPOINT_FILE).read_bytes()
    log.write_checkpoint()
    for segment in log._segments:
        segment.close()
    (directory / "synced-epochs").write_bytes(synced_version)


def test_a_power_loss_that_kept_the_synced_epoch_file_cuts_the_batches_it_lacks(tmp_path):
    crashed_log(tmp_path, flushed=4, total=8)
    # The power loss kept the data but not the epoch file's later rewrites.
    os.replace(tmp_path / "synced-epochs", tmp_path / EPOCH_CHECKPOINT_FILE)
    assert stored_epochs(tmp_path) == [[0, 0], [1, 2]]
    loaded = load_log(str(tmp_path), small_config(), NOW)
    try:
        # Offset 4 was written in epoch 2, which the file does not know: cut there.
        assert loaded.log_end_offset == 4 and loaded.truncated_at == 4
        assert loaded.epochs.entries() == [(0, 0), (1, 2)]
    finally:
        for segment in loaded.segments:
            segment.close()


def test_a_lost_epoch_file_cuts_the_log_at_its_recovery_point_and_is_rebuilt(tmp_path, caplog):
    crashed_log(tmp_path, flushed=5, total=9)
    os.unlink(tmp_path / EPOCH_CHECKPOINT_FILE)
    loaded = load_log(str(tmp_path), small_config(), NOW)
    try:
        assert loaded.recovery_point == 5
        # What was flushed stays, with its epochs read back from the batches' headers.
        assert loaded.log_end_offset == 5
        assert loaded.epochs.entries() == [(0, 0), (1, 2), (2, 4)]
        assert stored_epochs(tmp_path) == [[0, 0], [1, 2], [2, 4]]
        assert "leader-epoch checkpoint is missing" in caplog.text
    finally:
        for segment in loaded.segments:
            segment.close()


def test_an_empty_epoch_file_is_treated_as_lost(tmp_path):
    crashed_log(tmp_path, flushed=3, total=6)
    (tmp_path / EPOCH_CHECKPOINT_FILE).write_bytes(b"")  # a rename that outran its data
    loaded = load_log(str(tmp_path), small_config(), NOW)
    try:
        assert loaded.log_end_offset == 3
        assert loaded.epochs.entries() == [(0, 0), (1, 2)]
    finally:
        for segment in loaded.segments:
            segment.close()
