"""The bounded pool of segment and index files: LRU bookkeeping, and logs that keep working
(and stay durable) when the pool holds far fewer descriptors than they have files."""

from __future__ import annotations

import os

import pytest

from raftka.broker.log import handles
from raftka.broker.log.config import LogConfig
from raftka.broker.log.handles import (
    FilePool,
    HandleBudgetExhaustedError,
    LruHandles,
)
from raftka.broker.log.log import PartitionLog
from tests.unit.log.helpers import append_values


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ----------------------------------------------------------------------- bookkeeping
def test_victims_are_the_least_recently_used_unpinned() -> None:
    lru: LruHandles[str] = LruHandles(3)
    for key in "abc":
        assert lru.pin(key)
        lru.unpin(key)
    assert not lru.pin("a")  # already open: just used again
    lru.unpin("a")
    assert lru.victims() == ["b"]
    assert "b" not in lru and len(lru) == 2


def test_pinned_keys_are_never_victims() -> None:
    lru: LruHandles[str] = LruHandles(2)
    lru.pin("a")
    lru.pin("b")
    lru.unpin("b")
    assert lru.victims() == ["b"]
    lru.pin("c")
    with pytest.raises(HandleBudgetExhaustedError, match="all 2 pooled file handles are in use"):
        lru.victims()


def test_no_victims_while_under_capacity() -> None:
    lru: LruHandles[int] = LruHandles(5)
    for key in range(4):
        lru.pin(key)
        lru.unpin(key)
    assert lru.victims() == []


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        LruHandles(0)


# --------------------------------------------------------------------------- the pool
def test_pool_reopens_closed_files_and_never_exceeds_capacity(tmp_path: object) -> None:
    pool = FilePool(capacity=2)
    before = open_fds()
    files = [pool.open(os.path.join(str(tmp_path), f"f{i}")) for i in range(5)]
    for i, file in enumerate(files):
        file.pwrite(bytes([i]) * 10, 0)
        assert pool.open_count() <= 2
        assert open_fds() - before <= 2
    for i, file in enumerate(files):
        assert file.pread(10, 0) == bytes([i]) * 10
    assert pool.evictions > 0 and pool.open_count() == 2
    for file in files:
        file.close()
    assert open_fds() == before


def test_a_dup_outlives_eviction(tmp_path: object) -> None:
    pool = FilePool(capacity=1)
    first = pool.open(os.path.join(str(tmp_path), "a"))
    first.pwrite(b"hello", 0)
    duplicate = first.dup()
    pool.open(os.path.join(str(tmp_path), "b")).pwrite(b"x", 0)  # evicts `first`
    assert not first.is_open
    try:
        assert os.pread(duplicate, 5, 0) == b"hello"
        os.fsync(duplicate)
    finally:
        os.close(duplicate)


def test_closed_file_refuses_use(tmp_path: object) -> None:
    pool = FilePool(capacity=4)
    file = pool.open(os.path.join(str(tmp_path), "a"))
    file.close()
    with pytest.raises(OSError, match="is closed"):
        file.pread(1, 0)


def test_set_capacity_closes_idle_files_now(tmp_path: object) -> None:
    pool = FilePool(capacity=10)
    files = [pool.open(os.path.join(str(tmp_path), f"f{i}")) for i in range(6)]
    pool.set_capacity(2)
    assert pool.open_count() == 2
    assert [f.is_open for f in files] == [False] * 4 + [True] * 2


# ----------------------------------------------------------------- logs on a tiny pool
@pytest.fixture
def tiny_pool(monkeypatch: pytest.MonkeyPatch) -> FilePool:
    pool = FilePool(capacity=4)
    monkeypatch.setattr(handles, "_SHARED", pool)
    return pool


def test_many_logs_with_many_segments_served_through_four_descriptors(
    tmp_path: object, tiny_pool: FilePool
) -> None:
    """30 partitions x several segments (~100 files) through a pool of 4: appends, reads,
    flush, close and recovery all work, and the process never holds more than 4 of them."""
    config = LogConfig(segment_bytes=600, index_interval_bytes=100)
    before = open_fds()
    logs = [PartitionLog.open(os.path.join(str(tmp_path), f"p{i}"), config, 0) for i in range(30)]
    for round_ in range(8):
        for i, partition_log in enumerate(logs):
            append_values(partition_log, [f"{i}-{round_}".encode() * 10], epoch=1)
            assert open_fds() - before <= tiny_pool.capacity + 1
    for partition_log in logs:
        partition_log.flush(2000)
        partition_log.update_high_watermark(partition_log.log_end_offset)
        assert partition_log.segment_count > 1
    for i, partition_log in enumerate(logs):
        for offset in range(8):
            assert f"{i}-{offset}".encode() * 10 in partition_log.read(offset, 1 << 20)
        assert partition_log.log_end_offset == 8
    for partition_log in logs:
        partition_log.close(3000)
    assert open_fds() == before
    reopened = [
        PartitionLog.open(os.path.join(str(tmp_path), f"p{i}"), config, 0) for i in range(30)
    ]
    assert [r.log_end_offset for r in reopened] == [8] * 30
    assert open_fds() - before <= tiny_pool.capacity
    for r in reopened:
        r.close(4000)


def test_torn_tail_recovered_through_a_tiny_pool(tmp_path: object, tiny_pool: FilePool) -> None:
    config = LogConfig(segment_bytes=10_000)
    directory = os.path.join(str(tmp_path), "p")
    partition_log = PartitionLog.open(directory, config, 0)
    for n in range(3):
        append_values(partition_log, [b"v%d" % n], epoch=1)
    partition_log.close(1000)
    segment_file = os.path.join(directory, "00000000000000000000.log")
    with open(segment_file, "ab") as handle:
        handle.write(b"\x00\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x50torn")
    # Other files take the pool meanwhile, so recovery runs on reopened descriptors.
    others = [tiny_pool.open(os.path.join(str(tmp_path), f"o{i}")) for i in range(6)]
    recovered = PartitionLog.open(directory, config, 0)
    assert recovered.log_end_offset == 3
    assert os.path.getsize(segment_file) == recovered.size_bytes
    recovered.close(2000)
    for other in others:
        other.close()
