"""PartitionLog: the append-only log of one partition, as ordered segments in one directory.

How it works: the last segment is the active one; appends go there until it reaches
segment.bytes or segment.ms, then a new segment starts at the next offset (the old one is
flushed, which advances the recovery point). Retention deletes whole segments from the front,
never past the high watermark. On open, segments after the recovery point are scanned and a
torn or corrupt tail is cut off (and logged) before anything is served.

This module serves the running log (append, read, truncate, flush). Two jobs live beside it
so that each can be read and tested alone: loader.py opens and recovers the directory (Kafka's
LogLoader), and retention.py decides, without I/O, which old segments retention deletes;
PartitionLog carries out that decision.

Offsets of the log:
    log_start_offset <= high_watermark <= log_end_offset
Consumers read below the high watermark; followers up to the log end offset.

Thread-safety: every public method takes the log's lock. Appends come from the broker's
single writer thread per log directory; reads may come from any thread.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from raftka.broker.log.checkpoint import CHECKPOINT_FILE, write_epoch_checkpoint, write_json
from raftka.broker.log.config import LogConfig
from raftka.broker.log.dir_checkpoints import StoredOffsets
from raftka.broker.log.epoch_cache import LeaderEpochCache
from raftka.broker.log.file_slice import FileSlice
from raftka.broker.log.loader import load_log
from raftka.broker.log.retention import SegmentSummary, plan_retention
from raftka.broker.log.segment import LogSegment
from raftka.records import (
    ATTR_TIMESTAMP_LOG_APPEND,
    BatchHeader,
    CorruptBatchError,
    crc_of,
    decode_batches,
    patch_offsets,
    read_header,
    split_batches,
)

log = logging.getLogger("raftka.log")

_ATTRIBUTES = struct.Struct(">h")
_TIMESTAMP = struct.Struct(">q")
_CRC = struct.Struct(">I")
# A segment's indexes hold offsets relative to its base offset as int32 (as Kafka's do): a
# segment spans at most this many offsets past its base, and rolls before it would.
MAX_RELATIVE_OFFSET = 2**31 - 1


class OffsetOutOfRangeError(Exception):
    """A read or lookup asked for an offset outside [log_start_offset, log_end_offset]."""


class RecordTooLargeError(Exception):
    """A batch is larger than max.message.bytes."""


@dataclass(frozen=True, slots=True)
class AppendResult:
    base_offset: int
    last_offset: int
    log_append_time_ms: int
    batch_count: int
    size_bytes: int


class PartitionLog:
    # Invariant: segments are sorted by base offset and never overlap.
    # Invariant: log_start_offset <= high_watermark <= log_end_offset.
    def __init__(self, directory: str, config: LogConfig) -> None:
        self.directory = directory
        self.config = config
        self._lock = threading.RLock()
        self._segments: list[LogSegment] = []
        self.log_start_offset = 0
        self.high_watermark = 0
        self.recovery_point = 0
        self.epochs = LeaderEpochCache()
        self._unflushed_records = 0
        self._last_flush_ms: int | None = None
        self._closed = False
        # Orders checkpoint file writes, which happen outside the main lock.
        self._checkpoint_lock = threading.Lock()
        self._checkpointed: dict[str, int] | None = None
        # Set when the log directory's checkpoints (dir_checkpoints.py) keep this log's
        # offsets: called instead of writing `partition.checkpoint` whenever they change.
        self.on_offsets_changed: Callable[[], None] | None = None

    # ------------------------------------------------------------------------- opening
    @classmethod
    def open(
        cls, directory: str, config: LogConfig, now_ms: int, stored: StoredOffsets | None = None
    ) -> PartitionLog:
        """`stored`: the offsets the directory-level checkpoints hold for this log; None
        reads (and then keeps writing) the log's own `partition.checkpoint`."""
        os.makedirs(directory, exist_ok=True)
        partition_log = cls(directory, config)
        partition_log._load(now_ms, stored)
        return partition_log

    def _load(self, now_ms: int, stored: StoredOffsets | None) -> None:
        loaded = load_log(self.directory, self.config, now_ms, stored)
        self._segments = loaded.segments
        self.log_start_offset = loaded.log_start_offset
        self.high_watermark = loaded.high_watermark
        self.recovery_point = loaded.recovery_point
        self.epochs = loaded.epochs

    # -------------------------------------------------------------------------- offsets
    @property
    def log_end_offset(self) -> int:
        return self._segments[-1].next_offset

    @property
    def first_segment_base_offset(self) -> int:
        return self._segments[0].base_offset

    @property
    def size_bytes(self) -> int:
        return sum(segment.size_bytes for segment in self._segments)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    def segment_base_offsets(self) -> list[int]:
        with self._lock:
            return [segment.base_offset for segment in self._segments]

    def clamped_high_watermark(self, offset: int) -> int:
        """What update_high_watermark(offset) would make the high watermark: `offset`
        within [log start, log end]."""
        return max(self.log_start_offset, min(offset, self.log_end_offset))

    def update_high_watermark(self, offset: int) -> bool:
        """Move the high watermark (clamped to the log); True when it changed."""
        with self._lock:
            new_value = self.clamped_high_watermark(offset)
            if new_value == self.high_watermark:
                return False
            self.high_watermark = new_value
            return True

    def last_batch_epoch(self) -> int:
        return self.epochs.latest_epoch

    # ---------------------------------------------------------------------------- append
    def append_as_leader(
        self,
        data: bytearray,
        batches: list[tuple[int, BatchHeader]],
        leader_epoch: int,
        now_ms: int,
    ) -> AppendResult:
        """Assign offsets to validated batches (patching them in `data`) and append them."""
        with self._lock:
            self._check_open()
            for _, header in batches:
                if header.size_bytes > self.config.max_message_bytes:
                    raise RecordTooLargeError(
                        f"record batch of {header.size_bytes} bytes exceeds max.message.bytes "
                        f"({self.config.max_message_bytes})"
                    )
            first_offset = self.log_end_offset
            _check_span(first_offset, sum(h.last_offset_delta + 1 for _, h in batches) - 1)
            next_offset = first_offset
            patched: list[tuple[int, BatchHeader]] = []
            for position, header in batches:
                patch_offsets(data, position, next_offset, leader_epoch)
                if self.config.log_append_time:
                    _stamp_log_append_time(data, position, header, now_ms)
                patched.append((position, read_header(data, position)))
                next_offset += header.last_offset_delta + 1
            if self.epochs.assign(leader_epoch, first_offset):
                self._write_epochs()
            self._write(data, patched, now_ms)
            return AppendResult(
                base_offset=first_offset,
                last_offset=next_offset - 1,
                log_append_time_ms=now_ms if self.config.log_append_time else -1,
                batch_count=len(patched),
                size_bytes=len(data),
            )

    def append_as_follower(self, data: bytes, now_ms: int) -> AppendResult | None:
        """Append batches copied from the leader, offsets already assigned. They must start
        at the log end offset; their leader epochs feed the epoch cache."""
        with self._lock:
            self._check_open()
            if not data:
                return None
            batches = split_batches(data)
            expected = self.log_end_offset
            for _, header in batches:
                if header.base_offset != expected:
                    raise CorruptBatchError(
                        f"replicated batch starts at {header.base_offset}, expected {expected}"
                    )
                expected = header.next_offset
            _check_span(batches[0][1].base_offset, batches[-1][1].last_offset
                        - batches[0][1].base_offset)
            epochs_changed = False
            for _, header in batches:
                epochs_changed |= self.epochs.assign(
                    header.partition_leader_epoch, header.base_offset
                )
            if epochs_changed:
                self._write_epochs()
            self._write(data, batches, now_ms)
            return AppendResult(
                base_offset=batches[0][1].base_offset,
                last_offset=batches[-1][1].last_offset,
                log_append_time_ms=-1,
                batch_count=len(batches),
                size_bytes=len(data),
            )

    def _write(
        self, data: bytes | bytearray, batches: list[tuple[int, BatchHeader]], now_ms: int
    ) -> None:
        self._maybe_roll(len(data), batches[-1][1].last_offset, now_ms)
        self._segments[-1].append(data, batches, now_ms)
        self._unflushed_records += sum(h.last_offset_delta + 1 for _, h in batches)

    def flush_due_by_count(self) -> bool:
        """flush.messages: the caller flushes (outside any lock) when this says so."""
        return self._unflushed_records >= self.config.flush_messages

    def _maybe_roll(self, incoming_bytes: int, incoming_last_offset: int, now_ms: int) -> None:
        active = self._segments[-1]
        if active.is_empty:
            return
        too_big = active.size_bytes + incoming_bytes > self.config.segment_bytes
        first = active.first_append_ms
        too_old = first is not None and now_ms - first >= self.config.segment_ms
        too_far = incoming_last_offset - active.base_offset > MAX_RELATIVE_OFFSET
        if too_big or too_old or too_far:
            self._roll(now_ms)

    def _roll(self, now_ms: int) -> None:
        """Start a new active segment. The old one is fsynced later by flush(), off the lock,
        as Kafka flushes rolled segments asynchronously."""
        active = self._segments[-1]
        active.seal()
        self._segments.append(
            LogSegment(self.directory, active.next_offset, self.config.index_interval_bytes)
        )

    def roll_if_due(self, now_ms: int) -> bool:
        """Roll an idle active segment that is older than segment.ms (called periodically)."""
        with self._lock:
            if self._closed:
                return False
            active = self._segments[-1]
            first = active.first_append_ms
            if active.is_empty or first is None or now_ms - first < self.config.segment_ms:
                return False
            self._roll(now_ms)
            return True

    # ------------------------------------------------------------------------------ read
    def read(
        self, offset: int, max_bytes: int, max_offset: int | None = None, min_one_batch: bool = True
    ) -> bytes:
        """Stored batches starting with the one that holds `offset`, below `max_offset`
        (exclusive; default the log end offset), at most max_bytes (but see min_one_batch).

        Raises OffsetOutOfRangeError when offset is below the log start or above the end.
        """
        with self._lock:
            upper = self._read_upper_bound(offset, max_offset)
            for segment in self._segments_from(offset) if offset < upper else []:
                data = segment.read(offset, max_bytes, upper, min_one_batch)
                if data:
                    return data
            return b""

    def read_slice(
        self, offset: int, max_bytes: int, max_offset: int | None = None, min_one_batch: bool = True
    ) -> FileSlice | None:
        """What `read` would return, as a FileSlice of a segment file (None when empty); the
        caller closes it. Raises as `read` does."""
        with self._lock:
            upper = self._read_upper_bound(offset, max_offset)
            for segment in self._segments_from(offset) if offset < upper else []:
                position, length, after = segment.read_range(
                    offset, max_bytes, upper, min_one_batch
                )
                if length:
                    return FileSlice(segment.duplicate_descriptor(), position, length,
                                     next_offset=after)
            return None

    def _read_upper_bound(self, offset: int, max_offset: int | None) -> int:
        """The exclusive end of a read from `offset` (the log end offset or less)."""
        self._check_open()
        leo = self.log_end_offset
        if offset < self.log_start_offset or offset > leo:
            raise OffsetOutOfRangeError(
                f"offset {offset} is out of range [{self.log_start_offset}, {leo}]"
            )
        return leo if max_offset is None else min(max_offset, leo)

    def _segments_from(self, offset: int) -> list[LogSegment]:
        index = 0
        for i, segment in enumerate(self._segments):
            if segment.base_offset <= offset:
                index = i
            else:
                break
        return self._segments[index:]

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record with timestamp >= timestamp_ms, below the
        high watermark, or None when there is none."""
        with self._lock:
            self._check_open()
            for segment in self._segments:
                if segment.max_timestamp_ms < timestamp_ms:
                    continue
                found = segment.find_offset_by_timestamp(timestamp_ms)
                if found is None:
                    continue
                position, header = found
                if header.base_offset >= self.high_watermark:
                    return None
                batch = segment.read_batch_at(position, header)
                for record in decode_batches(batch, from_offset=self.log_start_offset):
                    if record.timestamp_ms >= timestamp_ms:
                        if record.offset >= self.high_watermark:
                            return None
                        return record.offset, record.timestamp_ms
            return None

    def iter_batch_headers(self) -> Iterator[BatchHeader]:
        """Headers of every stored batch, oldest first (rebuilds producer state on open)."""
        with self._lock:
            segments = list(self._segments)
        for segment in segments:
            yield from segment.iter_headers()

    def assign_epoch(self, epoch: int, start_offset: int) -> None:
        """A new leader epoch starts at `start_offset` (called when becoming leader)."""
        with self._lock:
            if self.epochs.assign(epoch, start_offset):
                self._write_epochs()

    # -------------------------------------------------------------------------- truncate
    def truncate_to(self, offset: int) -> int:
        """Drop every record at or after `offset` (a follower's divergent tail). Returns the
        new log end offset, which may be lower than `offset` if a batch straddled it."""
        with self._lock:
            self._check_open()
            if offset >= self.log_end_offset:
                # Nothing to cut, but an epoch this broker started as leader without writing
                # anything must go (as Kafka does), or its fetches keep diverging.
                if self.epochs.truncate_from_end(self.log_end_offset):
                    self._write_epochs()
                return self.log_end_offset
            while len(self._segments) > 1 and self._segments[-1].base_offset >= offset:
                self._segments.pop().delete_files()
            removed = self._segments[-1].truncate_to(offset)
            leo = self.log_end_offset
            log.info("%s: truncated to offset %d (%d bytes removed)", self.directory, leo, removed)
            if self.epochs.truncate_from_end(leo):
                self._write_epochs()
            self.high_watermark = min(self.high_watermark, leo)
            self.recovery_point = min(self.recovery_point, leo)
            if self.log_start_offset > leo:
                self.log_start_offset = leo
            self.write_checkpoint()
            return leo

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Empty the log and restart it at `offset` (a follower far behind a leader whose
        log now starts later)."""
        with self._lock:
            self._check_open()
            for segment in self._segments:
                segment.delete_files()
            self._segments = [LogSegment(self.directory, offset, self.config.index_interval_bytes)]
            self.log_start_offset = offset
            self.high_watermark = offset
            self.recovery_point = offset
            self.epochs.clear()
            self._write_epochs()
            self.write_checkpoint()

    def advance_start_offset(self, offset: int) -> bool:
        """Make `offset` the first offset kept (Kafka's DeleteRecords): whole segments below
        it are deleted. Never past what is committed here. True when it moved."""
        with self._lock:
            self._check_open()
            target = min(offset, self.high_watermark, self.log_end_offset)
            if target <= self.log_start_offset:
                return False
            self.log_start_offset = target
            while len(self._segments) > 1 and self._segments[1].base_offset <= target:
                self._segments.pop(0).delete_files()
            if self.epochs.truncate_from_start(target):
                self._write_epochs()
        self.write_checkpoint()
        return True

    # ------------------------------------------------------------------------- retention
    def enforce_retention(self, now_ms: int) -> int:
        """Delete segments past retention.ms or beyond retention.bytes; return how many.

        Only whole segments entirely below the high watermark go, and never the active one
        unless it is expired too (then it is rolled first, as Kafka does). retention.py
        decides which; this carries it out.
        """
        with self._lock:
            if self._closed:
                return 0
            plan = plan_retention(
                [_summary(segment) for segment in self._segments],
                retention_ms=self.config.retention_ms,
                retention_bytes=self.config.retention_bytes,
                high_watermark=self.high_watermark,
                log_start_offset=self.log_start_offset,
                now_ms=now_ms,
            )
            deleted = len(plan.delete_base_offsets)
            if not deleted:
                return 0
            if plan.roll_active:
                self._roll(now_ms)
            for base_offset in plan.delete_base_offsets:
                oldest = self._segments.pop(0)
                assert oldest.base_offset == base_offset, "retention planned other segments"
                oldest.delete_files()
            self.log_start_offset = plan.log_start_offset
            log.info(
                "%s: retention deleted %d segment(s); log start offset is now %d",
                self.directory,
                deleted,
                self.log_start_offset,
            )
            if self.epochs.truncate_from_start(self.log_start_offset):
                self._write_epochs()
            self.write_checkpoint()
            return deleted

    # --------------------------------------------------------------------- durability
    def flush(self, now_ms: int) -> None:
        """fsync everything up to the log end offset and advance the recovery point.

        The fsyncs run on duplicated descriptors outside the lock, so readers never wait for
        the disk; a segment deleted meanwhile is harmless (its duplicate stays valid).
        """
        with self._lock:
            if self._closed:
                return
            target = self.log_end_offset
            if self._unflushed_records == 0 and self.recovery_point >= target:
                return  # nothing new since the last flush (a group-committed producer)
            active = self._segments[-1]
            descriptors = [
                fd
                for segment in self._segments
                if segment.next_offset > self.recovery_point or segment is active
                for fd in segment.duplicate_descriptors()
            ]
            self._unflushed_records = 0
            self._last_flush_ms = now_ms
        try:
            for fd in descriptors:
                os.fsync(fd)
        finally:
            for fd in descriptors:
                os.close(fd)
        with self._lock:
            if self._closed:
                return
            self.recovery_point = max(self.recovery_point, min(target, self.log_end_offset))
        self.write_checkpoint()

    def flush_if_due(self, now_ms: int) -> bool:
        """Periodic: flush rolled segments not yet on disk, and honour flush.ms."""
        with self._lock:
            if self._closed or self.recovery_point >= self.log_end_offset:
                return False
            if self._last_flush_ms is None:
                self._last_flush_ms = now_ms
            rolled_unflushed = self.recovery_point < self._segments[-1].base_offset
            timed_out = now_ms - self._last_flush_ms >= self.config.flush_ms
        if rolled_unflushed or timed_out:
            self.flush(now_ms)
            return True
        return False

    def write_checkpoint(self) -> None:
        """The offsets changed: tell the directory's checkpoints (which write at once only
        what may not be late), or, for a log on its own, persist them in
        `partition.checkpoint` (skipped when nothing changed since the last write)."""
        if self.on_offsets_changed is not None:
            self.on_offsets_changed()
            return
        with self._lock:
            state = {
                "high_watermark": self.high_watermark,
                "recovery_point": self.recovery_point,
                "log_start_offset": self.log_start_offset,
            }
            path = os.path.join(self.directory, CHECKPOINT_FILE)
        with self._checkpoint_lock:
            if state == self._checkpointed or not os.path.isdir(self.directory):
                return
            write_json(path, state)
            self._checkpointed = state

    def _write_epochs(self) -> None:
        write_epoch_checkpoint(self.directory, self.epochs.entries())

    # ---------------------------------------------------------------------- lifecycle
    def close(self, now_ms: int | None = None) -> None:
        """Flush everything and close; a clean close means nothing to recover next time."""
        with self._lock:
            if self._closed:
                return
            self._segments[-1].seal()
        self.flush(now_ms if now_ms is not None else 0)
        with self._lock:
            for segment in self._segments:
                segment.close()
            self._closed = True

    def delete(self) -> None:
        """Remove the partition's directory (the topic was deleted or moved away)."""
        with self._lock:
            for segment in self._segments:
                segment.delete_files()
            self._closed = True
            for name in os.listdir(self.directory):
                os.unlink(os.path.join(self.directory, name))
            os.rmdir(self.directory)

    def _check_open(self) -> None:
        if self._closed:
            raise OSError(f"log {self.directory} is closed")


def _check_span(first_offset: int, span: int) -> None:
    """Refuse, before anything is written, batches of one append whose offsets would not fit
    in one segment (lastOffsetDelta of a compressed batch is not checked against its
    records: a producer can claim 2**31 of them)."""
    if span > MAX_RELATIVE_OFFSET:
        raise CorruptBatchError(
            f"batches from offset {first_offset} span {span + 1} offsets; one append may "
            f"span at most {MAX_RELATIVE_OFFSET + 1}"
        )


def _summary(segment: LogSegment) -> SegmentSummary:
    return SegmentSummary(
        base_offset=segment.base_offset,
        next_offset=segment.next_offset,
        size_bytes=segment.size_bytes,
        # Not max_timestamp_ms: -1 when no record carries a timestamp, which retention would
        # take for 1970; Kafka's rule falls back to the file's last-modified time.
        max_timestamp_ms=segment.largest_timestamp_ms(),
    )


def _stamp_log_append_time(
    data: bytearray, position: int, header: BatchHeader, now_ms: int
) -> None:
    """LogAppendTime topics: mark the batch and set maxTimestamp to the broker's clock. Both
    are inside the CRC, so it is recomputed (one pass of CRC32C over the batch)."""
    _ATTRIBUTES.pack_into(data, position + 21, header.attributes | ATTR_TIMESTAMP_LOG_APPEND)
    _TIMESTAMP.pack_into(data, position + 35, now_ms)
    _CRC.pack_into(data, position + 17, crc_of(data, position, header.size_bytes))
