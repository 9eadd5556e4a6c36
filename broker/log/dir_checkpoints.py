"""The offsets of every partition in a log directory, in three files per directory (Kafka's
`replication-offset-checkpoint`, `recovery-point-offset-checkpoint` and
`log-start-offset-checkpoint`), instead of one file per partition.

Why: with one `partition.checkpoint` per partition (two fsyncs each), the writer thread
wrote every partition whose high watermark had moved on every maintenance round; under
produce to 10,000 partitions that was ~20,000 fsyncs a second in front of the appends.
Now a round writes at most three files, and only every
replica.high.watermark.checkpoint.interval.ms and only those whose content changed.

What may be late and what may not:
- The high watermark may be older after a crash: it is only a lower bound (the leader
  advances it again from its followers' fetches; a follower takes the leader's). It must
  never be higher than the log's, so one that went down (a truncation, or a partition of
  a deleted topic's name opened anew) is written at once.
- The recovery point may be older: recovery then scans more segments. It must never be
  *higher* than what is fsynced, so when a truncation lowers it below what the file says,
  the file is rewritten at once (as Kafka's truncateTo checkpoints the recovery points).
- The log start offset must never go back across a restart (records deleted by
  DeleteRecords would reappear): a change of it that the segment files do not imply is
  written at once, before the call that made it returns. Retention's changes need no
  write (the segments below are gone, and the loader never starts before the first
  segment): a retention round over 10,000 partitions must not rewrite the file 10,000
  times.

Old data directories (a `partition.checkpoint` per partition) still load: an offset missing
from these files is read from the partition's own file, which is deleted once all three
files hold the partition.

Format (Kafka's): a version line `0`, a line with the entry count, then one
`<topic> <partition> <offset>` line per partition (topic names have no spaces). Each file is
written whole: temp file, fsync, rename, fsync of the directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from raftka.broker.log.checkpoint import CHECKPOINT_FILE, read_json, write_atomically

log = logging.getLogger("raftka.log")

HIGH_WATERMARK_FILE = "replication-offset-checkpoint"
RECOVERY_POINT_FILE = "recovery-point-offset-checkpoint"
LOG_START_FILE = "log-start-offset-checkpoint"
FORMAT_VERSION = 0

Key = tuple[str, int]  # (topic, partition)


class CheckpointFormatError(ValueError):
    """A checkpoint file that does not parse; the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class StoredOffsets:
    """A partition's offsets as the last checkpoints left them; None: not stored."""

    high_watermark: int | None = None
    recovery_point: int | None = None
    log_start_offset: int | None = None


class CheckpointedLog(Protocol):
    """What the checkpoints read of a PartitionLog."""

    directory: str
    high_watermark: int
    recovery_point: int
    log_start_offset: int

    @property
    def first_segment_base_offset(self) -> int: ...


def restart_log_start(stored: StoredOffsets, partition_log: CheckpointedLog) -> int:
    """The log start offset a restart would give the log, by the loader's rule, once the
    log reaches it: the stored one, never before the first segment. When segments were
    deleted below it (retention), that is the new start without any write."""
    return max(stored.log_start_offset or 0, partition_log.first_segment_base_offset)


# ------------------------------------------------------------------------------ format
def format_offsets(offsets: Mapping[Key, int]) -> bytes:
    lines = [str(FORMAT_VERSION), str(len(offsets))]
    lines.extend(f"{topic} {partition} {offset}" for (topic, partition), offset
                 in sorted(offsets.items()))
    return ("\n".join(lines) + "\n").encode()


def parse_offsets(data: bytes, name: str) -> dict[Key, int]:
    lines = data.decode("utf-8", errors="replace").splitlines()
    if len(lines) < 2:
        raise CheckpointFormatError(f"{name}: {len(lines)} line(s); a version and a count "
                                    "line come first")
    if lines[0].strip() != str(FORMAT_VERSION):
        raise CheckpointFormatError(f"{name}: version {lines[0].strip()!r}, expected "
                                    f"{FORMAT_VERSION}")
    try:
        count = int(lines[1])
    except ValueError:
        raise CheckpointFormatError(f"{name}: line 2: count {lines[1]!r} is not a number") \
            from None
    entries = lines[2:]
    if count != len(entries):
        raise CheckpointFormatError(f"{name}: says {count} entries, holds {len(entries)}")
    out: dict[Key, int] = {}
    for number, line in enumerate(entries, start=3):
        fields = line.split()
        if len(fields) != 3 or not fields[1].isdigit():
            raise CheckpointFormatError(f"{name}: line {number}: {line!r} is not "
                                        "'<topic> <partition> <offset>'")
        try:
            offset = int(fields[2])
        except ValueError:
            raise CheckpointFormatError(f"{name}: line {number}: offset {fields[2]!r} is not "
                                        "a number") from None
        out[(fields[0], int(fields[1]))] = offset
    return out


def read_offsets(path: str) -> dict[Key, int] | None:
    """The file's entries; None when it does not exist or does not parse (logged: the
    offsets then come from the partitions' own files, or start from the segments)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None
    try:
        return parse_offsets(data, path)
    except CheckpointFormatError as exc:
        log.error("ignoring a damaged checkpoint: %s", exc)
        return None


def read_legacy(directory: str) -> StoredOffsets:
    """A partition directory's own `partition.checkpoint` (the layout before these files)."""
    stored = read_json(os.path.join(directory, CHECKPOINT_FILE)) or {}

    def value(name: str) -> int | None:
        found = stored.get(name)
        return int(found) if isinstance(found, int) else None

    return StoredOffsets(value("high_watermark"), value("recovery_point"),
                         value("log_start_offset"))


# ---------------------------------------------------------------------------- the files
_KINDS = ("high_watermark", "recovery_point", "log_start_offset")
_FILES = {"high_watermark": HIGH_WATERMARK_FILE, "recovery_point": RECOVERY_POINT_FILE,
          "log_start_offset": LOG_START_FILE}


class DirectoryCheckpoints:
    """The three checkpoint files of one log directory and the logs they cover.

    Called on the directory's writer thread (the lock also covers tests and shutdown):
    `register` when a log opens, `forget` when it is deleted, `save` whenever a log's
    offsets change (it writes at once only what must not be late), `write_if_changed` on
    the periodic round, `write_all` at shutdown."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self._lock = threading.RLock()
        # What each file holds now (None: the file does not exist).
        self._on_disk: dict[str, dict[Key, int] | None] = {
            kind: read_offsets(os.path.join(log_dir, name)) for kind, name in _FILES.items()
        }
        self._logs: dict[Key, CheckpointedLog] = {}
        # What a restart would read for each registered log, per kind (dir file or legacy).
        self._durable: dict[Key, StoredOffsets] = {}
        # Logs whose own partition.checkpoint goes once all three files hold them.
        self._legacy: set[Key] = set()
        self.files_written = 0  # for tests and benchmarks

    def stored(self, key: Key, directory: str) -> StoredOffsets:
        """What a restart reads for `key`: each offset from these files, else (an older
        data directory) from the partition's own file, else None."""
        with self._lock:
            legacy: StoredOffsets | None = None
            values: dict[str, int | None] = {}
            for kind in _KINDS:
                found = (self._on_disk[kind] or {}).get(key)
                if found is None:
                    if legacy is None:
                        legacy = read_legacy(directory)
                    found = getattr(legacy, kind)
                values[kind] = found
            return StoredOffsets(**values)

    def register(self, key: Key, partition_log: CheckpointedLog) -> None:
        """A log opened (from what `stored` said). Writes at once what a restart would get
        wrong otherwise: e.g. offsets a deleted partition of the same name left behind."""
        with self._lock:
            self._logs[key] = partition_log
            self._durable[key] = self.stored(key, partition_log.directory)
            if os.path.exists(os.path.join(partition_log.directory, CHECKPOINT_FILE)):
                self._legacy.add(key)
        self.save(key, partition_log)

    def forget(self, key: Key) -> None:
        """The log was deleted; the next write leaves it out."""
        with self._lock:
            self._logs.pop(key, None)
            self._durable.pop(key, None)
            self._legacy.discard(key)

    def save(self, key: Key, partition_log: CheckpointedLog) -> None:
        """The log's offsets changed: write now what may not be late — a log start offset
        other than the one a restart would find (`restart_log_start`), or a high watermark
        or recovery point below the stored one (a restart must not take offsets past what
        this log holds and has synced); the rest waits for the periodic round."""
        with self._lock:
            durable = self._durable.get(key)
            if durable is None or self._logs.get(key) is not partition_log:
                return
            urgent = [kind for kind in ("high_watermark", "recovery_point")
                      if (getattr(durable, kind) or 0) > getattr(partition_log, kind)]
            if restart_log_start(durable, partition_log) != partition_log.log_start_offset:
                urgent.append("log_start_offset")
            if urgent:
                self._write(urgent)

    def write_if_changed(self) -> int:
        """The periodic round: rewrite each file whose content changed; returns how many."""
        with self._lock:
            return self._write(_KINDS, only_changed=True)

    def write_all(self) -> None:
        """Shutdown (after every log is closed and flushed): every file that changed."""
        with self._lock:
            self._write(_KINDS, only_changed=True)

    def _write(self, kinds: Iterable[str], only_changed: bool = False) -> int:
        written = 0
        snapshot = {key: (lg.high_watermark, lg.recovery_point, lg.log_start_offset)
                    for key, lg in self._logs.items()}
        for kind in kinds:
            column = _KINDS.index(kind)
            offsets = {key: values[column] for key, values in snapshot.items()}
            if only_changed and offsets == self._on_disk[kind]:
                continue
            write_atomically(os.path.join(self.log_dir, _FILES[kind]), format_offsets(offsets))
            self._on_disk[kind] = offsets
            self.files_written += 1
            written += 1
            for key, offset in offsets.items():
                old = self._durable.get(key, StoredOffsets())
                fields = {k: getattr(old, k) for k in _KINDS}
                fields[kind] = offset
                self._durable[key] = StoredOffsets(**fields)
        self._drop_legacy_files()
        return written

    def _drop_legacy_files(self) -> None:
        done = [key for key in self._legacy
                if all(key in (self._on_disk[kind] or {}) for kind in _KINDS)]
        for key in done:
            partition_log = self._logs.get(key)
            if partition_log is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(partition_log.directory, CHECKPOINT_FILE))
            self._legacy.discard(key)
