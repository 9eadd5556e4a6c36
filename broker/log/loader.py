"""Opening a partition directory: find its segments, recover what a crash may have damaged,
and work out the offsets the log starts with (Kafka's LogLoader).

Why a module of its own: loading runs once per open and only reads and repairs files, while
PartitionLog serves appends and reads for as long as the broker runs. Apart, each is small
enough to read whole, and recovery can be tested on a directory without a running log.

How it works: segments whose every offset is below the recovery point were fsynced, so their
indexes are trusted and only their tails are checked (LogSegment.load, which recovers the
segment when they do not check out). Later segments may hold a torn or corrupt tail and are
scanned batch by batch (LogSegment.recover: framing, CRC, offsets that follow on, and leader
epochs that match the stored epoch cache, since the CRC covers neither), which cuts the file
at the first invalid byte; every segment after such a cut, or after a gap, is deleted, since
its offsets no longer follow on. Orphan indexes and leftover temp files go too. Then the stored
log start offset, high watermark and recovery point are clamped to what survived, and the
leader-epoch cache is trimmed to the same range.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from raftka.broker.log.checkpoint import read_epoch_checkpoint, write_epoch_checkpoint
from raftka.broker.log.config import LogConfig
from raftka.broker.log.dir_checkpoints import StoredOffsets, read_legacy
from raftka.broker.log.epoch_cache import LeaderEpochCache
from raftka.broker.log.segment import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
    LogSegment,
)

log = logging.getLogger("raftka.log")

TEMP_SUFFIX = ".tmp"


@dataclass(frozen=True, slots=True)
class LoadedLog:
    """What a PartitionLog starts from; `segments` are open and now belong to the caller."""

    # Sorted by base offset, never overlapping, never empty (the last is the active one).
    segments: list[LogSegment]
    log_start_offset: int
    high_watermark: int
    recovery_point: int
    epochs: LeaderEpochCache
    # The offset at which a torn or corrupt tail was cut off (None when none was).
    truncated_at: int | None
    truncated_bytes: int
    # Base offsets of the segment files deleted: after the cut, or overlapping a previous one.
    deleted_segments: tuple[int, ...]

    @property
    def log_end_offset(self) -> int:
        return self.segments[-1].next_offset


def load_log(
    directory: str, config: LogConfig, now_ms: int, stored: StoredOffsets | None = None
) -> LoadedLog:
    """Open and recover the segments in `directory` (which must exist; it may be empty).

    `stored`: the offsets the log directory's checkpoints hold for it (dir_checkpoints.py);
    None reads the partition's own `partition.checkpoint` (a log opened on its own, or an
    older data directory). An offset not stored counts as 0 (the log start offset then
    comes from the first segment; the recovery point 0 makes every segment be scanned).
    `now_ms` stands in for the first append time of a non-empty active segment (segment.ms
    rolls count from when this process first saw it). Files are repaired in place: tails cut,
    segments and orphan files deleted, the epoch checkpoint rewritten when it changed.
    """
    offsets = stored if stored is not None else read_legacy(directory)
    stored_recovery_point = offsets.recovery_point or 0
    stored_start = offsets.log_start_offset or 0
    stored_high_watermark = offsets.high_watermark or 0
    bases = segment_base_offsets_on_disk(directory)
    remove_orphan_files(directory, set(bases))
    # Written (and fsynced) before any batch of a new epoch, so it speaks for every batch.
    stored_epochs = LeaderEpochCache(read_epoch_checkpoint(directory))
    segments: list[LogSegment] = []
    deleted: list[int] = []
    truncated_at: int | None = None
    truncated_bytes = 0
    for i, base in enumerate(bases):
        segment = LogSegment(directory, base, config.index_interval_bytes)
        if truncated_at is not None:
            log.warning(
                "deleting %s: it follows corrupt data at offset %d", segment.log_path, truncated_at
            )
            segment.delete_files()
            deleted.append(base)
            continue
        if segments and segment.base_offset > segments[-1].next_offset:
            truncated_at = segments[-1].next_offset
            log.warning(
                "deleting %s and the segments after it: offsets %d to %d are missing",
                segment.log_path, truncated_at, segment.base_offset - 1,
            )
            segment.delete_files()
            deleted.append(base)
            continue
        upper = bases[i + 1] if i + 1 < len(bases) else None
        if upper is not None and upper <= stored_recovery_point:
            result = segment.load(stored_epochs.epoch_for_offset)
        else:
            result = segment.recover(epoch_of=stored_epochs.epoch_for_offset)
        if result.truncated_bytes:
            truncated_at = segment.next_offset
            truncated_bytes = result.truncated_bytes
            log.warning(
                "%s: cut %d bytes of torn or corrupt data at offset %d (%s)",
                segment.log_path,
                result.truncated_bytes,
                truncated_at,
                result.reason,
            )
        if segments and segment.base_offset < segments[-1].next_offset:
            log.warning("deleting %s: it overlaps the previous segment", segment.log_path)
            segment.delete_files()
            deleted.append(base)
            continue
        segments.append(segment)
    if not segments:
        segments.append(LogSegment(directory, stored_start, config.index_interval_bytes))
    active = segments[-1]
    if active.first_append_ms is None and not active.is_empty:
        active.first_append_ms = now_ms
    leo = active.next_offset
    log_start_offset = min(max(stored_start, segments[0].base_offset), leo)
    return LoadedLog(
        segments=segments,
        log_start_offset=log_start_offset,
        high_watermark=max(min(stored_high_watermark, leo), log_start_offset),
        recovery_point=min(stored_recovery_point, leo),
        epochs=trim_epochs(directory, stored_epochs, log_start_offset, leo),
        truncated_at=truncated_at,
        truncated_bytes=truncated_bytes,
        deleted_segments=tuple(deleted),
    )


def segment_base_offsets_on_disk(directory: str) -> list[int]:
    """Base offsets of the `<base>.log` files in `directory`, ascending."""
    return sorted(
        int(name[: -len(LOG_SUFFIX)])
        for name in os.listdir(directory)
        if name.endswith(LOG_SUFFIX) and name[: -len(LOG_SUFFIX)].isdigit()
    )


def remove_orphan_files(directory: str, bases: set[int]) -> None:
    """Delete indexes whose log file is gone, and temp files a crash left mid-write."""
    index_suffixes = (INDEX_SUFFIX[1:], TIME_INDEX_SUFFIX[1:])
    for name in os.listdir(directory):
        stem, _, suffix = name.partition(".")
        orphan_index = suffix in index_suffixes and stem.isdigit()
        if (orphan_index and int(stem) not in bases) or name.endswith(TEMP_SUFFIX):
            os.unlink(os.path.join(directory, name))


def trim_epochs(
    directory: str, epochs: LeaderEpochCache, log_start_offset: int, log_end_offset: int
) -> LeaderEpochCache:
    """The stored leader-epoch cache, trimmed to [log_start_offset, log_end_offset] (and
    stored again when trimming changed it)."""
    changed = epochs.truncate_from_end(log_end_offset)
    changed |= epochs.truncate_from_start(log_start_offset)
    if changed:
        write_epoch_checkpoint(directory, epochs.entries())
    return epochs
