"""Fetch sessions on the replication stream (broker/replication/fetch_session.py): what a
follower names per request, what the leader answers, and — the safety half — that the leader
still fetches, checks and records the position of every partition in the session in every
round, so the ISR and the high watermark move exactly as without sessions."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from raftka.broker.errors import FencedLeaderEpochError, NotLeaderError
from raftka.broker.fetch_path import FetchPath
from raftka.broker.log.file_slice import FileSlice
from raftka.broker.partition import TopicPartition
from raftka.broker.purgatory import Purgatory
from raftka.broker.replication.fetch_session import (
    FollowerFetchSession,
    LeaderFetchSession,
    SessionError,
)
from raftka.proto.raftka.v1 import broker_pb2, common_pb2

Code = common_pb2.ErrorCode
A, B, C = (TopicPartition("t", i) for i in range(3))
FOLLOWER = 2


# ----------------------------------------------------------------------- follower's side
def test_a_new_session_names_everything_then_only_what_moved():
    session = FollowerFetchSession()
    positions = {A: (5, 1, 1), B: (7, 1, 1)}
    assert session.changes(positions) == ([A, B], [])
    assert session.changes(positions) == ([], [])
    assert session.changes({A: (6, 1, 1), B: (7, 1, 1)}) == ([A], [])
    assert session.changes({A: (6, 2, 1), B: (7, 1, 1)}) == ([A], [])  # a new leader epoch
    assert session.changes({A: (6, 2, 2), B: (7, 1, 1)}) == ([A], [])  # last fetched epoch


def test_partitions_no_longer_followed_are_forgotten_once_and_new_ones_named():
    session = FollowerFetchSession()
    session.changes({A: (5, 1, 1), B: (7, 1, 1)})
    assert session.changes({B: (7, 1, 1), C: (0, 1, -1)}) == ([C], [A])
    assert session.changes({B: (7, 1, 1), C: (0, 1, -1)}) == ([], [])


def test_asked_again_partitions_are_named_once_even_unchanged():
    session = FollowerFetchSession()
    session.changes({A: (5, 1, 1), B: (7, 1, 1)})
    session.ask_again([B])
    assert session.changes({A: (5, 1, 1), B: (7, 1, 1)}) == ([B], [])
    assert session.changes({A: (5, 1, 1), B: (7, 1, 1)}) == ([], [])


def test_a_reset_session_names_everything_again():
    session = FollowerFetchSession()
    session.changes({A: (5, 1, 1)})
    session.reset()
    assert session.changes({A: (5, 1, 1)}) == ([A], [])


def test_a_leader_without_sessions_gets_every_partition_in_every_request():
    session = FollowerFetchSession()
    session.changes({A: (5, 1, 1), B: (7, 1, 1)})
    session.answered(broker_pb2.FetchResponse())  # session unset: an older leader
    assert not session.supported
    assert session.changes({A: (5, 1, 1), B: (7, 1, 1)}) == ([A, B], [])
    assert session.changes({A: (5, 1, 1), B: (7, 1, 1)}) == ([A, B], [])
    session.reset()  # a new connection tries again
    assert session.supported


# ------------------------------------------------------------------------- leader's side
def named(*tps: TopicPartition, offset: int = 0,
          forgotten: tuple[TopicPartition, ...] = ()) -> broker_pb2.FetchRequest:
    return broker_pb2.FetchRequest(
        replica_id=FOLLOWER, session=True, max_wait_ms=0,
        partitions=[broker_pb2.FetchPartition(topic=tp.topic, partition=tp.partition,
                                              fetch_offset=offset, current_leader_epoch=1,
                                              last_fetched_epoch=-1) for tp in tps],
        forgotten=[broker_pb2.FetchForgotten(topic=tp.topic, partition=tp.partition)
                   for tp in forgotten])


def test_the_leader_session_keeps_every_partition_until_forgotten():
    session = LeaderFetchSession()
    asked, keys = session.apply(named(A, B))
    assert keys == [A, B] and [p.partition for p in asked] == [0, 1]
    asked, keys = session.apply(named(B, offset=9))  # B moved, A unchanged
    assert keys == [A, B] and [p.fetch_offset for p in asked] == [0, 9]
    assert session.apply(named(forgotten=(A,)))[1] == [B]


def test_a_named_partition_is_answered_then_quiet_until_its_news_changes():
    session = LeaderFetchSession()
    session.apply(named(A))
    assert not session.quiet(A, 10, 0)  # named: answered whatever it holds
    assert not session.quiet(A, 10, 0)  # ... until that answer is sent
    session.told([(A, 10, 0)])
    assert session.quiet(A, 10, 0)
    assert not session.quiet(A, 11, 0)  # the high watermark moved
    assert not session.quiet(A, 10, 3)  # the log start moved
    session.told([(A, 11, 3)])
    assert session.quiet(A, 11, 3)
    session.answered(A)  # answered with records (or an error) meanwhile
    assert not session.quiet(A, 11, 3)
    session.told([(A, 11, 3), (B, 1, 1)])  # B is in no session: ignored
    session.apply(named(A))  # named again: answered again
    assert not session.quiet(A, 11, 3)


def test_a_session_past_its_bound_is_refused():
    session = LeaderFetchSession(max_partitions=2)
    session.apply(named(A, B))
    with pytest.raises(SessionError, match="3 partitions; at most 2"):
        session.apply(named(C))
    with pytest.raises(ValueError):
        LeaderFetchSession(max_partitions=0)


# ------------------------------------------------------- the leader's FetchPath, with fakes
class Epochs:
    def end_offset_for(self, epoch: int, end: int) -> tuple[int, int]:
        return (epoch - 1, 3) if epoch >= 5 else (epoch, end)  # epoch 5+: diverged


@dataclass
class State:
    def is_replica(self, replica_id: int) -> bool:
        return replica_id == FOLLOWER


@dataclass
class Log:
    folder: Path
    end: int = 10
    high_watermark: int = 10
    log_start_offset: int = 0
    epochs: Epochs = field(default_factory=Epochs)

    @property
    def log_end_offset(self) -> int:
        return self.end

    def read_slice(self, offset: int, limit: int, upper: int | None,
                   min_one_batch: bool) -> FileSlice | None:
        if offset >= self.end:
            return None
        path = self.folder / "segment.log"
        path.write_bytes(b"x" * 100)
        return FileSlice(os.open(path, os.O_RDONLY), 0, 100)


@dataclass
class FakePartition:
    tp: TopicPartition
    log: Log
    leader_id: int = 1
    leader_epoch: int = 1
    fetches: list[int] = field(default_factory=list)
    leader_state: State = field(default_factory=State)

    @property
    def log_end_offset(self) -> int:
        return self.log.end

    @property
    def log_start_offset(self) -> int:
        return self.log.log_start_offset

    @property
    def high_watermark(self) -> int:
        return self.log.high_watermark

    def check_leader(self, epoch: int = -1) -> State:
        return self.leader_state

    def record_follower_fetch(self, replica_id: int, fetch_offset: int, now_ms: int) -> bool:
        self.fetches.append(fetch_offset)
        return False


@dataclass
class Image:
    brokers: dict[int, object] = field(default_factory=dict)


class Replicas:
    def __init__(self, partitions: dict[TopicPartition, FakePartition]) -> None:
        self.partitions = partitions
        self.purgatory = Purgatory()
        self.image = Image()
        self.gone: set[TopicPartition] = set()

    def clock_ms(self) -> int:
        return 0

    def leader_partition(self, tp: TopicPartition, epoch: int = -1) -> FakePartition:
        if tp in self.gone:
            raise NotLeaderError(f"{tp} moved", 3, 4)
        partition = self.partitions[tp]
        if epoch not in (-1, partition.leader_epoch):
            raise FencedLeaderEpochError(f"epoch {epoch} of {tp} is stale")
        return partition


def leader(tmp_path: Path, count: int = 3, lease_problem: Any = None
           ) -> tuple[FetchPath, dict[TopicPartition, FakePartition]]:
    partitions = {}
    for index in range(count):
        tp = TopicPartition("t", index)
        folder = tmp_path / str(index)
        folder.mkdir()
        partitions[tp] = FakePartition(tp, Log(folder))
    path = FetchPath(Replicas(partitions), fetch_max_bytes=1 << 20,  # type: ignore[arg-type]
                     fetch_wait_max_ms=500, lease_problem=lease_problem)
    return path, partitions


def fetch(path: FetchPath, request: broker_pb2.FetchRequest,
          session: LeaderFetchSession | None) -> tuple[broker_pb2.FetchResponse, list[int]]:
    """The response and the partitions that came with a slice (closed here)."""
    response, slices = asyncio.run(path.fetch_slices(request, session))
    for found in slices.values():
        found.close()
    return response, [response.partitions[i].partition for i in sorted(slices)]


def test_every_partition_of_the_session_has_its_position_recorded_every_round(tmp_path):
    path, partitions = leader(tmp_path)
    session = LeaderFetchSession()
    response, _ = fetch(path, named(A, B, C, offset=10), session)
    assert response.session and [p.partition for p in response.partitions] == [0, 1, 2]
    for _ in range(3):  # nothing named, nothing new: an empty answer ...
        response, _ = fetch(path, named(), session)
        assert list(response.partitions) == []
    for partition in partitions.values():  # ... yet every follower position is noted
        assert partition.fetches == [10, 10, 10, 10]


def test_only_partitions_with_news_are_answered(tmp_path):
    path, partitions = leader(tmp_path)
    session = LeaderFetchSession()
    fetch(path, named(A, B, C, offset=10), session)
    partitions[B].log.end = 12  # records for B
    partitions[C].log.high_watermark = 11  # C's high watermark moved
    response, with_slices = fetch(path, named(), session)
    assert [p.partition for p in response.partitions] == [1, 2] and with_slices == [1]
    assert response.partitions[1].high_watermark == 11
    response, with_slices = fetch(path, named(B, offset=12), session)  # B took them
    assert [p.partition for p in response.partitions] == [1] and with_slices == []
    response, _ = fetch(path, named(), session)
    assert list(response.partitions) == []


def test_errors_and_divergence_are_answered_in_every_round(tmp_path):
    path, partitions = leader(tmp_path)
    session = LeaderFetchSession()
    fetch(path, named(A, B, C, offset=10), session)
    path._replicas.gone.add(A)  # type: ignore[attr-defined]
    partitions[A].leader_state = None  # type: ignore[assignment]  # it leads A no more
    diverged = named(B, offset=10)
    diverged.partitions[0].last_fetched_epoch = 5
    for request in (diverged, named(), named()):
        response, _ = fetch(path, request, session)
        replies = {p.partition: p for p in response.partitions}
        assert set(replies) == {0, 1}
        assert replies[0].error_code == Code.NOT_LEADER_OR_FOLLOWER
        assert replies[0].leader_id == 3 and replies[0].leader_epoch == 4
        assert replies[1].diverged and replies[1].diverging_end_offset == 3
    path._replicas.gone.clear()  # type: ignore[attr-defined]
    response, _ = fetch(path, named(), session)
    assert [p.partition for p in response.partitions] == [0, 1]  # fine again: said once


def test_without_a_session_every_asked_partition_is_answered(tmp_path):
    path, _ = leader(tmp_path)
    request = named(A, B, C, offset=10)
    request.session = False
    for _ in range(2):
        response, _ = fetch(path, request, None)
        assert not response.session
        assert [p.partition for p in response.partitions] == [0, 1, 2]
        assert all(p.high_watermark == 10 and p.log_end_offset == 10
                   for p in response.partitions)


def test_a_quiet_partition_is_checked_in_full_again_once_anything_of_it_changed(tmp_path):
    """The leader's shortcut for caught-up partitions (QuietSnapshot) holds only while the
    hosted partition, its leadership, log end and log start are what the last pass saw."""
    path, partitions = leader(tmp_path, count=4)
    session = LeaderFetchSession()
    D = TopicPartition("t", 3)
    fetch(path, named(A, B, C, D, offset=10), session)
    fetch(path, named(), session)  # every one quiet: the shortcut from now on
    partitions[A].log.end = 11  # records
    partitions[B].log.log_start_offset = 4  # retention moved the log start
    partitions[C].leader_state = State()  # a new leader epoch here
    partitions[C].leader_epoch = 2
    old_d = partitions[D]
    partitions[D] = FakePartition(D, old_d.log)  # the partition re-opened (same dict as hosted)
    response, with_slices = fetch(path, named(), session)
    replies = {p.partition: p for p in response.partitions}
    assert with_slices == [0]
    assert replies[1].log_start_offset == 4
    assert replies[2].error_code == Code.FENCED_LEADER_EPOCH  # its follower asks at epoch 1
    assert set(replies) == {0, 1, 2}  # D: a new object, nothing else new: checked, quiet
    assert old_d.fetches == [10, 10]
    assert partitions[D].fetches == [10]


def test_a_lapsed_lease_reaches_quiet_partitions_at_once(tmp_path):
    problem: list[str] = []
    path, _ = leader(tmp_path, lease_problem=lambda: problem[0] if problem else None)
    session = LeaderFetchSession()
    fetch(path, named(A, B, C, offset=10), session)
    fetch(path, named(), session)
    problem.append("lease lapsed")
    response, _ = fetch(path, named(), session)
    assert [p.error_code for p in response.partitions] == [Code.NOT_LEADER_OR_FOLLOWER] * 3
    assert all("lease lapsed" in p.error_message for p in response.partitions)


def test_a_high_watermark_seen_before_a_long_poll_is_still_sent_after_it(tmp_path):
    """A long poll reads every partition, waits, and reads them all again; only the second
    pass's response is sent. A high watermark the first pass saw move must be in it: the
    first pass once counted it as told, and a quiet partition's follower never heard of it
    (its high watermark stayed behind until the next write)."""
    path, partitions = leader(tmp_path)
    session = LeaderFetchSession()
    fetch(path, named(A, B, C, offset=10), session)
    partitions[C].log.high_watermark = 11  # news, but no bytes: the poll waits

    async def poll() -> broker_pb2.FetchResponse:
        request = named()
        request.max_wait_ms = 5000
        pending = asyncio.create_task(path.fetch_slices(request, session))
        await asyncio.sleep(0.05)
        partitions[B].log.end = 12  # records arrive for B meanwhile
        path._replicas.purgatory.notify(B)  # type: ignore[attr-defined]
        response, slices = await pending
        for found in slices.values():
            found.close()
        return response

    response = asyncio.run(poll())
    replies = {p.partition: p for p in response.partitions}
    assert set(replies) == {1, 2}
    assert replies[2].high_watermark == 11
