"""A follower applies one fetch reply's records in one writer job (then one job for the
flushes due), not one writer round trip per partition; a partition whose append fails leaves
the others appended, synced and notified, and its error is raised after them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from raftka.broker.controller_client import ChannelPool
from raftka.broker.partition import TopicPartition
from raftka.broker.replication.fetcher import FetcherManager, LeaderFetcher
from raftka.proto.raftka.v1 import broker_pb2


@dataclass
class FakeLog:
    flush_every_append: bool
    flushed: list[int] = field(default_factory=list)
    appended: int = 0

    def flush_due_by_count(self) -> bool:
        return self.flush_every_append and self.appended > len(self.flushed)

    def flush(self, now_ms: int) -> None:
        self.flushed.append(now_ms)

    def advance_start_offset(self, offset: int) -> None:
        raise AssertionError("not asked for in these replies")


@dataclass
class FakePartition:
    tp: TopicPartition
    log: FakeLog
    fails: bool = False
    leader_epoch: int = 1
    log_start_offset: int = 0
    high_watermark: int = 0
    stored: list[bytes] = field(default_factory=list)

    def appends_keep_the_epoch(self) -> bool:
        return True

    def append_as_follower(self, data: bytes, high_watermark: int, now_ms: int) -> Any:
        if self.fails:
            raise OSError(f"{self.tp}: disk full")
        self.stored.append(data)
        self.log.appended += 1
        self.high_watermark = high_watermark
        return object() if data else None


def reply_for(partition: FakePartition, data: bytes) -> broker_pb2.FetchPartitionResponse:
    return broker_pb2.FetchPartitionResponse(
        topic=partition.tp.topic, partition=partition.tp.partition, record_batches=data,
        high_watermark=7, log_start_offset=0)


def fetcher_with(writer_jobs: list[str], notified: list[TopicPartition]) -> LeaderFetcher:
    async def on_writer(function: Any, *args: Any) -> Any:
        writer_jobs.append(function.__name__)
        return function(*args)

    manager = FetcherManager(
        broker_id=2, channels=ChannelPool(), endpoint_of=lambda _: None, on_writer=on_writer,
        clock_ms=lambda: 5, broker_epoch=lambda: 1, notify=notified.append)
    return LeaderFetcher(manager, leader_id=1)


def test_one_writer_job_for_every_partition_of_a_reply():
    jobs: list[str] = []
    notified: list[TopicPartition] = []
    fetcher = fetcher_with(jobs, notified)
    partitions = [FakePartition(TopicPartition("t", i), FakeLog(flush_every_append=i % 2 == 0))
                  for i in range(100)]
    appends = [(p, reply_for(p, b"batch" if p.tp.partition != 3 else b""))
               for p in partitions]
    asyncio.run(fetcher._append_all(appends))  # type: ignore[arg-type]
    assert jobs == ["_append_each", "_flush_each"]
    assert all(p.high_watermark == 7 for p in partitions)
    # every partition with records is synced (where flush.messages says) and notified
    assert [p.tp.partition for p in partitions if p.log.flushed] == [
        i for i in range(100) if i % 2 == 0]
    assert notified == [p.tp for p in partitions if p.tp.partition != 3]


def test_a_failed_append_leaves_the_others_done_and_is_raised_after_them():
    jobs: list[str] = []
    notified: list[TopicPartition] = []
    fetcher = fetcher_with(jobs, notified)
    partitions = [FakePartition(TopicPartition("t", i), FakeLog(flush_every_append=True),
                                fails=i == 1) for i in range(3)]
    appends = [(p, reply_for(p, b"batch")) for p in partitions]
    with pytest.raises(OSError, match="disk full"):
        asyncio.run(fetcher._append_all(appends))  # type: ignore[arg-type]
    assert [len(p.stored) for p in partitions] == [1, 0, 1]
    assert [bool(p.log.flushed) for p in partitions] == [True, False, True]
    assert notified == [partitions[0].tp, partitions[2].tp]


def test_replies_with_nothing_to_apply_are_skipped():
    """No records, the high watermark this log already has (after clamping to its end), no
    later log start: nothing for the writer thread. Anything else is applied."""
    from raftka.broker.log.log import PartitionLog
    from raftka.broker.replication.fetcher import _reply_changes_something

    @dataclass
    class Log:  # the real clamp, on a log at offsets 0..7 with its high watermark at 7
        log_start_offset: int = 0
        log_end_offset: int = 7
        high_watermark: int = 7
        clamped_high_watermark = PartitionLog.clamped_high_watermark

    log = Log()
    partition = FakePartition(TopicPartition("t", 0), log)  # type: ignore[arg-type]

    def reply(data: bytes = b"", high_watermark: int = 7, log_start: int = 0):
        return broker_pb2.FetchPartitionResponse(
            topic="t", partition=0, record_batches=data, high_watermark=high_watermark,
            log_start_offset=log_start)

    assert not _reply_changes_something(partition, reply())  # type: ignore[arg-type]
    # a leader HW past this log's end clamps to the end, which the log already has
    assert not _reply_changes_something(partition, reply(high_watermark=9))  # type: ignore[arg-type]
    assert _reply_changes_something(partition, reply(data=b"batch"))  # type: ignore[arg-type]
    assert _reply_changes_something(partition, reply(high_watermark=5))  # type: ignore[arg-type]
    assert _reply_changes_something(partition, reply(log_start=3))  # type: ignore[arg-type]
    log.high_watermark = 4
    assert _reply_changes_something(partition, reply())  # type: ignore[arg-type]


def test_an_append_that_starts_a_new_epoch_goes_to_the_writer_thread():
    """run_small may run an append on the event loop, so it only gets appends that cannot
    fsync: a reply whose records start a leader epoch new to this log (stored with an
    fsync first) goes to the writer thread."""
    routed: list[tuple[str, int | None]] = []

    async def on_writer(function: Any, *args: Any) -> Any:
        routed.append(("thread", None))
        return function(*args)

    async def on_writer_small(size: int, function: Any, *args: Any) -> Any:
        routed.append(("small", size))
        return function(*args)

    class NewEpoch(FakePartition):
        def appends_keep_the_epoch(self) -> bool:
            return False

    manager = FetcherManager(
        broker_id=2, channels=ChannelPool(), endpoint_of=lambda _: None, on_writer=on_writer,
        clock_ms=lambda: 5, broker_epoch=lambda: 1, notify=lambda _tp: None,
        on_writer_small=on_writer_small)
    fetcher = LeaderFetcher(manager, leader_id=1)
    same = [FakePartition(TopicPartition("t", i), FakeLog(flush_every_append=False))
            for i in range(2)]
    asyncio.run(fetcher._append_all(  # type: ignore[arg-type]
        [(p, reply_for(p, b"x" * 10)) for p in same]))
    assert routed == [("small", 20)]
    routed.clear()
    mixed = [*same, NewEpoch(TopicPartition("t", 2), FakeLog(flush_every_append=False))]
    asyncio.run(fetcher._append_all(  # type: ignore[arg-type]
        [(p, reply_for(p, b"x" * 10)) for p in mixed]))
    assert routed == [("thread", None)]
