"""plan_retention: which old segments retention.ms and retention.bytes delete (no files)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raftka.broker.log.retention import UNLIMITED, SegmentSummary, plan_retention

NOW = 1_700_000_000_000


def segments(*specs: tuple[int, int, int]) -> list[SegmentSummary]:
    """Consecutive segments from (record count, size in bytes, largest timestamp) triples."""
    out = []
    base = 0
    for count, size_bytes, max_timestamp_ms in specs:
        out.append(SegmentSummary(base, base + count, size_bytes, max_timestamp_ms))
        base += count
    return out


def plan(segs, *, retention_ms=UNLIMITED, retention_bytes=UNLIMITED, hw=None, start=0, now=NOW):
    return plan_retention(
        segs,
        retention_ms=retention_ms,
        retention_bytes=retention_bytes,
        high_watermark=segs[-1].next_offset if hw is None else hw,
        log_start_offset=start,
        now_ms=now,
    )


def test_no_limits_delete_nothing():
    segs = segments((10, 100, NOW - 10**9), (10, 100, NOW - 10**9), (5, 50, NOW))
    result = plan(segs)
    assert (result.delete_base_offsets, result.roll_active, result.log_start_offset) == (
        (),
        False,
        0,
    )


def test_time_deletes_the_expired_prefix_and_moves_the_log_start():
    segs = segments((10, 100, NOW - 5000), (10, 100, NOW - 3000), (10, 100, NOW - 10), (5, 50, NOW))
    result = plan(segs, retention_ms=2000)
    assert result.delete_base_offsets == (0, 10)
    assert result.log_start_offset == 20
    assert not result.roll_active


def test_time_is_the_callers_now_and_the_limit_is_exclusive():
    segs = segments((10, 100, NOW), (5, 50, NOW + 10))
    assert plan(segs, retention_ms=1000, now=NOW + 1000).delete_base_offsets == ()
    assert plan(segs, retention_ms=1000, now=NOW + 1001).delete_base_offsets == (0,)


def test_deletion_stops_at_the_first_segment_that_stays():
    # the middle one is young: the older-looking one after it stays too
    segs = segments((10, 100, NOW - 5000), (10, 100, NOW), (10, 100, NOW - 5000), (5, 50, NOW))
    assert plan(segs, retention_ms=1000).delete_base_offsets == (0,)


def test_size_keeps_at_least_retention_bytes():
    segs = segments((10, 200, NOW), (10, 200, NOW), (10, 200, NOW), (5, 100, NOW))
    # 700 bytes: without the first 500 >= 400 goes; without the second 300 < 400 stays
    result = plan(segs, retention_bytes=400)
    assert result.delete_base_offsets == (0,)
    assert result.log_start_offset == 10
    assert plan(segs, retention_bytes=300).delete_base_offsets == (0, 10)


def test_size_never_deletes_the_active_segment():
    segs = segments((10, 200, NOW), (5, 100, NOW))
    assert plan(segs, retention_bytes=0).delete_base_offsets == (0,)


def test_a_segment_goes_when_it_breaches_either_limit():
    # first: too old; second: young but the log is over size without it
    segs = segments((10, 100, NOW - 5000), (10, 300, NOW), (10, 300, NOW), (5, 50, NOW))
    result = plan(segs, retention_ms=1000, retention_bytes=350)
    assert result.delete_base_offsets == (0, 10)


def test_nothing_at_or_above_the_high_watermark_goes():
    segs = segments((10, 100, NOW - 5000), (10, 100, NOW - 5000), (5, 50, NOW))
    assert plan(segs, retention_ms=1000, hw=15).delete_base_offsets == (0,)
    assert plan(segs, retention_ms=1000, hw=9).delete_base_offsets == ()
    assert plan(segs, retention_ms=1000, hw=20).delete_base_offsets == (0, 10)


def test_an_empty_segment_stops_deletion():
    segs = [SegmentSummary(0, 0, 0, -1), SegmentSummary(3, 8, 100, NOW)]
    assert plan(segs, retention_bytes=0).delete_base_offsets == ()


def test_an_expired_active_segment_is_rolled_then_deleted():
    segs = segments((10, 100, NOW - 5000), (5, 50, NOW - 5000))
    result = plan(segs, retention_ms=1000)
    assert result.delete_base_offsets == (0, 10)
    assert result.roll_active
    assert result.log_start_offset == 15  # where the rolled active segment starts


def test_an_expired_active_segment_above_the_high_watermark_stays():
    segs = segments((5, 50, NOW - 5000))
    result = plan(segs, retention_ms=1000, hw=4)
    assert (result.delete_base_offsets, result.roll_active) == ((), False)


def test_an_empty_active_segment_never_expires():
    segs = [SegmentSummary(7, 7, 0, -1)]
    result = plan(segs, retention_ms=0, start=7, hw=7)
    assert (result.delete_base_offsets, result.log_start_offset) == ((), 7)


def test_a_segment_of_unknown_age_is_never_expired_by_time():
    # -1 (no record carries a timestamp) is not "the epoch": taken as a timestamp it made
    # records written a moment ago look 54 years old. PartitionLog passes the file's
    # last-modified time instead, as Kafka does; the plan never deletes by age what it
    # cannot date. retention.bytes still applies.
    segs = segments((10, 100, -1), (5, 50, -1))
    assert plan(segs, retention_ms=1000).delete_base_offsets == ()
    assert plan(segs, retention_ms=0, now=NOW * 2).delete_base_offsets == ()
    assert plan(segs, retention_bytes=50).delete_base_offsets == (0,)


def test_the_log_start_offset_never_moves_back():
    # DeleteRecords moved the start inside the second segment already
    segs = segments((10, 100, NOW - 5000), (10, 100, NOW), (5, 50, NOW))
    result = plan(segs, retention_ms=1000, start=14)
    assert (result.delete_base_offsets, result.log_start_offset) == ((0,), 14)


def _reference(segs, retention_ms, retention_bytes, hw, start, now):
    """The loop PartitionLog.enforce_retention ran before retention.py, over summaries."""
    live = list(segs)
    total = sum(s.size_bytes for s in live)

    def expired(s):
        return retention_ms >= 0 and not s.is_empty and now - s.max_timestamp_ms > retention_ms

    deleted = []
    while len(live) > 1 or expired(live[-1]):
        oldest = live[0]
        over = retention_bytes >= 0 and total - oldest.size_bytes >= retention_bytes
        if not (expired(oldest) or over):
            break
        if oldest.next_offset > hw or oldest.is_empty:
            break
        if len(live) == 1:
            live.append(SegmentSummary(oldest.next_offset, oldest.next_offset, 0, -1))
        live.pop(0)
        total -= oldest.size_bytes
        deleted.append(oldest.base_offset)
        start = max(start, live[0].base_offset)
    return tuple(deleted), start


@settings(max_examples=500, deadline=None)
@given(
    specs=st.lists(
        st.tuples(st.integers(0, 5), st.integers(1, 300), st.integers(0, 10_000)),
        min_size=1,
        max_size=8,
    ),
    retention_ms=st.integers(-1, 10_000),
    retention_bytes=st.integers(-1, 1500),
    hw_back=st.integers(0, 10),
    now=st.integers(0, 20_000),
)
def test_same_decisions_as_the_loop_it_replaced(specs, retention_ms, retention_bytes, hw_back, now):
    segs = segments(*[(count, size if count else 0, ts) for count, size, ts in specs])
    hw = max(0, segs[-1].next_offset - hw_back)
    start = min(segs[0].base_offset, hw)
    result = plan_retention(
        segs,
        retention_ms=retention_ms,
        retention_bytes=retention_bytes,
        high_watermark=hw,
        log_start_offset=start,
        now_ms=now,
    )
    expected = _reference(segs, retention_ms, retention_bytes, hw, start, now)
    assert (result.delete_base_offsets, result.log_start_offset) == expected
    assert result.roll_active == (len(result.delete_base_offsets) == len(segs))
