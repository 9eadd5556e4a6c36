"""One log segment: `<base>.log` holding whole RecordBatch v2 batches, plus its indexes.

How it works: batches are appended at the end of the file exactly as they will be served.
Every `index_interval_bytes` of log, the offset index gets (base offset of the batch - segment
base, file position), and the time index gets (largest timestamp so far, its offset). To find
an offset, take the floor entry of the offset index and walk batch headers from there. The
indexes are caches: recovery rebuilds them from the log.

Timestamps: a batch is dated by its header's maxTimestamp, except one whose records carry no
timestamp (see batch_max_timestamp), which dates nothing. The segment's largest timestamp,
which retention.ms measures, is the largest of those, or the log file's last-modified time
when no batch carries one (Kafka's LogSegment.largestTimestamp).

Not thread-safe: the owning PartitionLog serialises access.
"""

from __future__ import annotations

import contextlib
import logging
import os
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from raftka.broker.log.handles import PooledFile, shared_pool
from raftka.broker.log.index import (
    IndexCorruptError,
    SparseIndex,
    open_offset_index,
    open_time_index,
)
from raftka.records import (
    HEADER_SIZE,
    BatchHeader,
    CorruptBatchError,
    check_crc,
    read_header,
    validate_header,
)

log = logging.getLogger("raftka.log")

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
NO_TIMESTAMP = -1
# Recovery reads the log in chunks of this size (plus whatever one batch needs).
# The positions of this many of the last batches appended are kept (batches): readers at the
# tail — followers, caught-up consumers — ask for offsets among them, which the sparse index
# alone makes them find by reading up to index_interval_bytes of batch headers (24 reads per
# lookup with one-record batches), twice per fetch (start and end).
RECENT_BATCHES_MAX = 64
RECOVERY_CHUNK_BYTES = 8 * 1024 * 1024


def segment_file_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


def batch_max_timestamp(header: BatchHeader) -> int:
    """The largest record timestamp the batch holds, or NO_TIMESTAMP when its records carry
    none.

    A header's maxTimestamp below zero means none. So does 0 with a baseTimestamp of -1:
    that is how librdkafka sends messages produced with timestamp -1 (records at -1, and a
    maxTimestamp whose running maximum starts at 0), which Kafka's broker stores as -1 after
    taking the maximum over the records. Read as the epoch, it dated records written a
    moment ago to 1970, and retention deleted them at once. The broker does not decode
    records to take that maximum (compressed batches stay compressed); the header tells.
    """
    if header.max_timestamp < 0:
        return NO_TIMESTAMP
    if header.max_timestamp == 0 and header.base_timestamp < 0:
        return NO_TIMESTAMP
    return header.max_timestamp


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    valid_bytes: int
    truncated_bytes: int
    reason: str


# What a segment was opened without: nothing cut.
NOTHING_CUT_REASON = ""

# The leader epoch the epoch cache says an offset was written in (or UNDEFINED_EPOCH, -1,
# when it does not know): the cache is stored, fsynced, before any batch of a new epoch is
# written (PartitionLog), so a batch that disagrees with it was damaged on disk.
EpochOf = Callable[[int], int]


class LogSegment:
    # Invariant: size_bytes is the end of the last complete, valid batch in the file.
    # Invariant: next_offset == base_offset when empty, else last batch's last offset + 1.
    def __init__(self, directory: str, base_offset: int, index_interval_bytes: int) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.index_interval_bytes = index_interval_bytes
        self.log_path = os.path.join(directory, segment_file_name(base_offset, LOG_SUFFIX))
        self._file: PooledFile = shared_pool().open(self.log_path)
        self.offset_index: SparseIndex = open_offset_index(
            os.path.join(directory, segment_file_name(base_offset, INDEX_SUFFIX))
        )
        self.time_index: SparseIndex = open_time_index(
            os.path.join(directory, segment_file_name(base_offset, TIME_INDEX_SUFFIX))
        )
        self.size_bytes = self._file.fstat().st_size
        self.next_offset = base_offset
        self.max_timestamp_ms = NO_TIMESTAMP
        self._offset_of_max_timestamp = base_offset
        self._bytes_since_index_entry = 0
        # Wall-clock ms of the first append seen by this process (segment.ms rolls).
        self.first_append_ms: int | None = None
        # The last batches appended by this process, oldest first, contiguous and ending at
        # size_bytes: (position, header), and their last offsets (for bisect).
        self._recent: list[tuple[int, BatchHeader]] = []
        self._recent_lasts: list[int] = []

    # ----------------------------------------------------------------------------- state
    @property
    def is_empty(self) -> bool:
        return self.size_bytes == 0

    def largest_timestamp_ms(self) -> int:
        """What retention.ms measures: the largest record timestamp held or, when no record
        carries one, the log file's last-modified time (as Kafka's LogSegment does), so that
        untimestamped data expires retention.ms after it was last written, not at once."""
        if self.max_timestamp_ms >= 0:
            return self.max_timestamp_ms
        return self._file.fstat().st_mtime_ns // 1_000_000

    # ----------------------------------------------------------------------------- write
    def append(
        self,
        data: bytes | bytearray | memoryview,
        batches: list[tuple[int, BatchHeader]],
        now_ms: int,
    ) -> None:
        """Write validated batches (positions relative to `data`) at the end of the file."""
        assert batches, "append needs at least one batch"
        assert batches[0][1].base_offset >= self.next_offset, "offsets must increase"
        written = self._file.pwrite(data, self.size_bytes)
        if written != len(data):
            raise OSError(f"short write to {self.log_path}: {written} of {len(data)} bytes")
        recent, lasts = self._recent, self._recent_lasts
        for relative_position, header in batches:
            position = self.size_bytes + relative_position
            self._index_batch(position, header)
            recent.append((position, header))
            lasts.append(header.last_offset)
        if len(recent) > 2 * RECENT_BATCHES_MAX:  # trimmed now and then, not per append
            del recent[:-RECENT_BATCHES_MAX]
            del lasts[:-RECENT_BATCHES_MAX]
        self.size_bytes += len(data)
        self.next_offset = batches[-1][1].next_offset
        if self.first_append_ms is None:
            self.first_append_ms = now_ms

    def _track_max_timestamp(self, header: BatchHeader) -> None:
        timestamp = batch_max_timestamp(header)
        if timestamp > self.max_timestamp_ms:
            self.max_timestamp_ms = timestamp
            self._offset_of_max_timestamp = header.last_offset

    def _index_batch(self, position: int, header: BatchHeader) -> None:
        self._track_max_timestamp(header)
        if self._bytes_since_index_entry >= self.index_interval_bytes or position == 0:
            self.offset_index.append(header.base_offset - self.base_offset, position)
            self._maybe_append_time_entry()
            self._bytes_since_index_entry = 0
        self._bytes_since_index_entry += header.size_bytes

    def _maybe_append_time_entry(self) -> None:
        last = self.time_index.last()
        if self.max_timestamp_ms == NO_TIMESTAMP:
            return
        relative = self._offset_of_max_timestamp - self.base_offset
        if last is None or (self.max_timestamp_ms > last[0] and relative >= last[1]):
            self.time_index.append(self.max_timestamp_ms, relative)

    def seal(self) -> None:
        """Called on roll: the time index gets its final entry so retention can trust it."""
        self._maybe_append_time_entry()

    # ------------------------------------------------------------------------------ read
    def position_of(self, offset: int) -> tuple[int, BatchHeader] | None:
        """Position and header of the first batch whose last offset is >= `offset`."""
        lasts = self._recent_lasts
        if lasts and offset > lasts[-1]:  # past the newest batch: nothing (the usual follower)
            newest_position, newest = self._recent[-1]
            position = newest_position + newest.size_bytes
        elif lasts and offset >= self._recent[0][1].base_offset:
            return self._recent[bisect_left(lasts, offset)]
        else:
            floor = self.offset_index.floor(offset - self.base_offset)
            position = floor[1] if floor else 0
        while position < self.size_bytes:
            header = read_header(self._file.pread(HEADER_SIZE, position))
            if header.last_offset >= offset:
                return position, header
            position += header.size_bytes
        return None

    def read(self, offset: int, max_bytes: int, max_offset: int, min_one_batch: bool) -> bytes:
        """Whole batches from the one holding `offset`, up to max_bytes, below max_offset.

        `max_offset` is exclusive (a consumer's high watermark). With `min_one_batch`, the
        first batch is returned even when larger than max_bytes, so readers make progress.
        """
        position, length, _ = self.read_range(offset, max_bytes, max_offset, min_one_batch)
        return self._file.pread(length, position) if length else b""

    def read_range(
        self, offset: int, max_bytes: int, max_offset: int, min_one_batch: bool
    ) -> tuple[int, int, int]:
        """(position, length) in the file of what `read` returns, found from batch headers
        alone, so the bytes themselves can go to a socket with sendfile; length 0 if none.
        Third: the offset after the range's last batch (what a reader asks for next), so a
        fetch can count what it served without reading the records."""
        start = self.position_of(offset)
        if start is None:
            return 0, 0, offset
        position, first = start
        if first.last_offset >= max_offset:
            return 0, 0, offset
        limit = self.position_of(max_offset)
        end, after = (limit[0], limit[1].base_offset) if limit else (
            self.size_bytes, self.next_offset)
        if end - position <= max_bytes:
            return position, end - position, after
        if first.size_bytes > max_bytes:
            if min_one_batch:
                return position, first.size_bytes, first.last_offset + 1
            return 0, 0, offset
        end, after = self._complete_batches_end(position, position + max_bytes)
        return position, end - position, after

    def _complete_batches_end(self, position: int, cap: int) -> tuple[int, int]:
        """End of the last whole batch that starts at or after `position` and ends by `cap`,
        and the offset after it.

        Index entries sit on batch starts, so the walk starts at most index_interval_bytes
        before `cap` rather than at `position`.
        """
        entry = self.offset_index.floor_by_value(cap)
        walk = max(position, entry[1]) if entry else position
        while walk < self.size_bytes:
            header = read_header(self._file.pread(HEADER_SIZE, walk))
            if walk + header.size_bytes > cap:
                return walk, header.base_offset
            walk += header.size_bytes
        return walk, self.next_offset

    def find_offset_by_timestamp(self, timestamp_ms: int) -> tuple[int, BatchHeader] | None:
        """Position and header of the first batch whose max timestamp is >= timestamp_ms."""
        entry = self.time_index.before_key(timestamp_ms)
        start_offset = self.base_offset + entry[1] if entry else self.base_offset
        found = self.position_of(start_offset)
        if found is None:
            return None
        position = found[0]
        while position < self.size_bytes:
            header = read_header(self._file.pread(HEADER_SIZE, position))
            if batch_max_timestamp(header) >= timestamp_ms:
                return position, header
            position += header.size_bytes
        return None

    def iter_headers(self) -> Iterator[BatchHeader]:
        position = 0
        while position < self.size_bytes:
            header = read_header(self._file.pread(HEADER_SIZE, position))
            yield header
            position += header.size_bytes

    def read_batch_at(self, position: int, header: BatchHeader) -> bytes:
        return self._file.pread(header.size_bytes, position)

    def duplicate_descriptor(self) -> int:
        """A descriptor of its own onto the log file, for a sendfile after the log's lock is
        released: it stays valid even if the segment is closed or deleted meanwhile."""
        return self._file.dup()

    # -------------------------------------------------------------------------- recovery
    def load(self, epoch_of: EpochOf | None = None) -> RecoveryResult:
        """Open a segment that was flushed before: trust its indexes, read its tail headers.

        Falls back to a full recovery (`recover`, with `epoch_of`) when an index or the tail
        does not check out, and returns what that recovery cut: the caller must treat a cut
        here like any other (the segments after it no longer follow on).
        """
        try:
            self.offset_index.load()
            self.time_index.load()
        except IndexCorruptError as exc:
            log.warning("rebuilding indexes of %s: %s", self.log_path, exc)
            return self.recover(epoch_of=epoch_of)
        last = self.offset_index.last()
        if last is not None and last[1] >= self.size_bytes:
            log.warning("index of %s points past the end of the log; rebuilding", self.log_path)
            return self.recover(epoch_of=epoch_of)
        position = last[1] if last else 0
        self._bytes_since_index_entry = 0
        self.next_offset = self.base_offset + (last[0] if last else 0)
        try:
            self._restore_max_timestamp(position)
            while position < self.size_bytes:
                header = read_header(self._file.pread(HEADER_SIZE, position))
                validate_header(header, self.size_bytes - position)
                self._track_max_timestamp(header)
                self._bytes_since_index_entry += header.size_bytes
                self.next_offset = header.next_offset
                position += header.size_bytes
        except CorruptBatchError as exc:
            log.warning("%s is damaged (%s); recovering it", self.log_path, exc)
            return self.recover(epoch_of=epoch_of)
        if self.max_timestamp_ms >= 0 and self._offset_of_max_timestamp >= self.next_offset:
            log.warning(
                "time index of %s points past the end of the log; rebuilding", self.log_path
            )
            return self.recover(epoch_of=epoch_of)
        return RecoveryResult(self.size_bytes, 0, NOTHING_CUT_REASON)

    def _restore_max_timestamp(self, tail_position: int) -> None:
        """Set the largest timestamp of the batches before `tail_position` (where the caller
        starts reading headers): the time index's last entry, when it holds a timestamp.

        When it holds none, the headers before `tail_position` are read instead: the index
        file may have been lost (it is reopened empty), or written by a version that took
        librdkafka's maxTimestamp 0 for a timestamp. Either way, trusting it made fresh data
        look expired after a restart. (A segment whose batches all lack timestamps is read
        through on each open: such segments are rare, and only headers are read.)
        """
        time_last = self.time_index.last()
        if time_last is not None and time_last[0] > 0:
            self.max_timestamp_ms = time_last[0]
            self._offset_of_max_timestamp = self.base_offset + time_last[1]
            return
        self.max_timestamp_ms = NO_TIMESTAMP
        self._offset_of_max_timestamp = self.base_offset
        position = 0
        while position < tail_position:
            header = read_header(self._file.pread(HEADER_SIZE, position))
            validate_header(header, self.size_bytes - position)
            self._track_max_timestamp(header)
            position += header.size_bytes

    def recover(
        self, max_batch_bytes: int | None = None, epoch_of: EpochOf | None = None
    ) -> RecoveryResult:
        """Scan every batch, checking framing, CRC, offsets and leader epochs; rebuild the
        indexes; cut the file at the first invalid byte. The data past that point is never
        served.

        The CRC does not cover a batch's base offset or leader epoch, so they are checked
        against what must hold: offsets follow on with no gap (nothing here compacts), and
        the epoch is the one `epoch_of` (the stored epoch cache) gives for that offset."""
        self._forget_recent()
        self.offset_index.reset()
        self.time_index.reset()
        self.max_timestamp_ms = NO_TIMESTAMP
        self._offset_of_max_timestamp = self.base_offset
        self._bytes_since_index_entry = 0
        self.next_offset = self.base_offset
        file_size = self._file.fstat().st_size
        position = 0
        reason = ""
        while position < file_size:
            try:
                header = read_header(self._file.pread(HEADER_SIZE, position))
                validate_header(header, file_size - position)
                if max_batch_bytes is not None and header.size_bytes > max_batch_bytes:
                    raise CorruptBatchError(f"batch of {header.size_bytes} bytes is implausible")
                if header.base_offset != self.next_offset:
                    raise CorruptBatchError(
                        f"base offset {header.base_offset} does not follow on (expected "
                        f"{self.next_offset})"
                    )
                check_crc(self._file.pread(header.size_bytes, position), 0, header)
                _check_epoch(header, epoch_of)
            except CorruptBatchError as exc:
                reason = str(exc)
                break
            self._index_batch(position, header)
            self.next_offset = header.next_offset
            position += header.size_bytes
        truncated = file_size - position
        if truncated:
            self._file.ftruncate(position)
        self.size_bytes = position
        return RecoveryResult(valid_bytes=position, truncated_bytes=truncated, reason=reason)

    # ------------------------------------------------------------------------ truncation
    def truncate_to(self, offset: int) -> int:
        """Remove every batch whose last offset is >= `offset`; return bytes removed.

        A batch that straddles `offset` goes entirely (batches are never split), so the new
        next_offset may be below `offset`.
        """
        found = self.position_of(offset)
        if found is None:
            return 0
        position, header = found
        removed = self.size_bytes - position
        self._forget_recent()
        self._file.ftruncate(position)
        self.size_bytes = position
        self.offset_index.truncate_values_from(position)
        self.time_index.truncate_values_from(header.base_offset - self.base_offset)
        self.next_offset = header.base_offset if position else self.base_offset
        self._recompute_tail_state()
        return removed

    def _forget_recent(self) -> None:
        """Before the file shrinks or is rescanned: the kept positions no longer hold."""
        self._recent.clear()
        self._recent_lasts.clear()

    def _recompute_tail_state(self) -> None:
        last = self.offset_index.last()
        position = last[1] if last else 0
        self._bytes_since_index_entry = 0
        self._restore_max_timestamp(position)
        while position < self.size_bytes:
            header = read_header(self._file.pread(HEADER_SIZE, position))
            self._track_max_timestamp(header)
            self._bytes_since_index_entry += header.size_bytes
            position += header.size_bytes

    # ----------------------------------------------------------------------- lifecycle
    def duplicate_descriptors(self) -> list[int]:
        """Descriptors of the caller's own onto the log and both indexes, to fsync outside
        the log's lock (the pool may close its own meanwhile; fsync through any descriptor
        flushes the whole file). The caller closes them."""
        return [self._file.dup(), self.offset_index.dup(), self.time_index.dup()]

    def close(self) -> None:
        self._file.close()
        self.offset_index.close()
        self.time_index.close()

    def delete_files(self) -> None:
        self.close()
        for path in (self.log_path, self.offset_index.path, self.time_index.path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _check_epoch(header: BatchHeader, epoch_of: EpochOf | None) -> None:
    if epoch_of is None:
        return
    expected = epoch_of(header.base_offset)
    if expected >= 0 and header.partition_leader_epoch != expected:
        raise CorruptBatchError(
            f"batch at base offset {header.base_offset} has leader epoch "
            f"{header.partition_leader_epoch}, but the epoch cache says {expected}"
        )
