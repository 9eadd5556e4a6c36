"""Which old segments retention deletes (retention.ms and retention.bytes), decided without I/O.

Why pure: the rules (whole segments only, oldest first, never past the high watermark, the
active segment only when it has expired itself) are where retention goes wrong, and as a
function of plain numbers they are tested in microseconds. PartitionLog summarises its
segments, asks plan_retention, and does the rolling and deleting; the time is its caller's
`now_ms`, never read from a clock here.

How it decides, oldest segment first, stopping at the first one that stays:
    - it goes when retention.ms is breached: now_ms - its largest timestamp > retention.ms
      (Kafka's LogSegment.largestTimestamp: the largest record timestamp, or the file's
      last-modified time when no record carries one; a segment whose age is still unknown (a
      negative largest timestamp) is never expired by time);
    - or when retention.bytes is breached: the log without it still holds >= retention.bytes;
    - but it stays when it holds offsets at or above the high watermark, or is empty;
    - and the active (last) segment goes only when it breaches retention.ms; the log then
      rolls a new, empty active segment first, as Kafka does.
The new log start offset is the base offset of the first segment kept (never lower than the
current one). Unlike Kafka, which applies each rule in a pass of its own, this is one pass in
which a segment goes when it breaches either rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# retention.ms and retention.bytes below zero mean "no limit" (Kafka's -1).
UNLIMITED = -1


@dataclass(frozen=True, slots=True)
class SegmentSummary:
    """The numbers retention needs about one segment."""

    base_offset: int
    # One past the last offset held (== base_offset when empty).
    next_offset: int
    size_bytes: int
    # What retention.ms measures: the largest record timestamp held, or when none carries
    # one the file's last-modified time; below zero when unknown (meaningless when empty).
    max_timestamp_ms: int

    @property
    def is_empty(self) -> bool:
        return self.size_bytes == 0


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """The oldest `len(delete_base_offsets)` segments go; the log then starts at
    `log_start_offset`."""

    delete_base_offsets: tuple[int, ...]
    # The active segment is among them: roll a new active segment before deleting.
    roll_active: bool
    log_start_offset: int


def plan_retention(
    segments: Sequence[SegmentSummary],
    *,
    retention_ms: int,
    retention_bytes: int,
    high_watermark: int,
    log_start_offset: int,
    now_ms: int,
) -> RetentionPlan:
    """Decide which of `segments` (sorted by base offset, the last one active) retention
    deletes at `now_ms`; see the module docstring for the rules."""
    total_bytes = sum(segment.size_bytes for segment in segments)
    count = 0
    while count < len(segments):
        oldest = segments[count]
        is_active = count == len(segments) - 1
        expired = breaches_retention_ms(oldest, retention_ms, now_ms)
        if is_active and not expired:
            break
        over_size = breaches_retention_bytes(total_bytes, oldest, retention_bytes)
        if not (expired or over_size):
            break
        if oldest.next_offset > high_watermark or oldest.is_empty:
            break
        total_bytes -= oldest.size_bytes
        count += 1
    if count == 0:
        return RetentionPlan((), roll_active=False, log_start_offset=log_start_offset)
    roll_active = count == len(segments)
    # After a roll, the new active segment starts where the deleted one ended.
    first_kept = segments[-1].next_offset if roll_active else segments[count].base_offset
    return RetentionPlan(
        tuple(segment.base_offset for segment in segments[:count]),
        roll_active=roll_active,
        log_start_offset=max(log_start_offset, first_kept),
    )


def breaches_retention_ms(segment: SegmentSummary, retention_ms: int, now_ms: int) -> bool:
    """Its newest record is older than retention.ms at `now_ms` (empty segments never are,
    nor are segments of unknown age: -1 is no timestamp, not one from 1970)."""
    if retention_ms < 0 or segment.is_empty or segment.max_timestamp_ms < 0:
        return False
    return now_ms - segment.max_timestamp_ms > retention_ms


def breaches_retention_bytes(
    total_bytes: int, oldest: SegmentSummary, retention_bytes: int
) -> bool:
    """A log of `total_bytes` still holds at least retention.bytes without its oldest segment."""
    if retention_bytes < 0:
        return False
    return total_bytes - oldest.size_bytes >= retention_bytes
