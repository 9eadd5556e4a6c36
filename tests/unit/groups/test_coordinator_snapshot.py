"""A snapshot of the coordinator's offsets must hold every commit written before it: the
log before a snapshot is dropped, so a commit missing from it is lost at the next failover.

Before the fix, the snapshot was built from memory before taking the write lock: a commit
whose record was already in the log but not yet applied (still waiting for its acks=all
replication) was in neither the snapshot nor the log kept after it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from raftka.broker.groups import offsets_log
from raftka.broker.groups.coordinator import GroupCoordinator, GroupSettings
from raftka.broker.groups.offsets_log import OFFSETS_TOPIC
from raftka.broker.groups.state import CommittedOffset, ConsumerGroup
from raftka.broker.partition import TopicPartition
from raftka.proto.raftka.v1 import broker_pb2
from raftka.records import iter_headers, patch_offsets


@dataclass
class FakeLog:
    """Batches by base offset; advance_start_offset drops those before it."""

    batches: dict[int, bytes] = field(default_factory=dict)
    start: int = 0
    end: int = 0
    failovers: list[dict[str, ConsumerGroup]] = field(default_factory=list)

    def append(self, data: bytes) -> int:
        buffer = bytearray(data)
        base = self.end
        for position, header in iter_headers(buffer):
            patch_offsets(buffer, position, base, 0)
            self.end = base + header.last_offset_delta + 1
        self.batches[base] = bytes(buffer)
        return base

    def read(self, offset: int, max_bytes: int, end: int) -> bytes:
        return b"".join(data for base, data in sorted(self.batches.items()) if base >= offset)

    def advance_start_offset(self, offset: int) -> None:
        self.start = offset
        self.batches = {b: d for b, d in self.batches.items() if b >= offset}
        self.failovers.append(replay_log(self))  # what a coordinator taking over now loads


class FakePartition:
    is_leader = True
    leader_epoch = 0

    def __init__(self) -> None:
        self.log = FakeLog()

    @property
    def log_start_offset(self) -> int:
        return self.log.start

    @property
    def log_end_offset(self) -> int:
        return self.log.end


class FakeReplicas:
    def __init__(self, partition: FakePartition) -> None:
        self.partitions = {TopicPartition(OFFSETS_TOPIC, 0): partition}
        self.image = SimpleNamespace(topics={
            OFFSETS_TOPIC: SimpleNamespace(partitions=[0], internal=True),
            "t": SimpleNamespace(partitions=[0, 1, 2], internal=False),
        })

    async def on_writer(self, function: Any, *args: Any) -> Any:
        return function(*args)


class GatedProduce:
    """Appends at once (as the leader does) and acknowledges at once, except the calls
    numbered in `held`, which wait for their gate (acks=all waiting for the followers)."""

    def __init__(self, partition: FakePartition, held: set[int]) -> None:
        self._partition = partition
        self._held = held
        self.calls = 0
        self.gates: dict[int, asyncio.Event] = {i: asyncio.Event() for i in held}

    async def append_internal(self, topic: str, index: int, data: bytes,
                              timeout_ms: int) -> broker_pb2.PartitionProduceResponse:
        call, self.calls = self.calls, self.calls + 1
        base = self._partition.log.append(data)
        if call in self._held:
            await self.gates[call].wait()
        return broker_pb2.PartitionProduceResponse(topic=topic, partition=index,
                                                   base_offset=base)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def replay_log(log: FakeLog) -> dict[str, ConsumerGroup]:
    """What a new coordinator loads after a failover: the kept log, replayed."""
    groups: dict[str, ConsumerGroup] = {}
    data = log.read(log.start, 1 << 20, log.end)
    for _, record in offsets_log.decode(data, from_offset=log.start):
        offsets_log.replay(groups, record)
    return groups


def test_a_commit_in_flight_when_a_snapshot_is_due_survives_the_snapshot():
    async def scenario() -> dict[str, ConsumerGroup]:
        partition = FakePartition()
        produce = GatedProduce(partition, held={1, 2})
        coordinator = GroupCoordinator(
            FakeReplicas(partition),  # type: ignore[arg-type]
            produce,  # type: ignore[arg-type]
            lambda: 1_000,
            GroupSettings(snapshot_every_records=2),
        )
        coordinator.refresh()
        await settle()  # loads the (empty) partition
        await coordinator.store_offsets("g", {("t", 0): CommittedOffset(1, "", 1_000)})
        second = asyncio.create_task(
            coordinator.store_offsets("g", {("t", 1): CommittedOffset(5, "", 1_000)})
        )
        await settle()  # in the log, waiting for its replication
        third = asyncio.create_task(
            coordinator.store_offsets("h", {("t", 2): CommittedOffset(7, "", 1_000)})
        )
        await settle()
        produce.gates[1].set()  # second acknowledged: a snapshot is now due
        await settle()  # (third is in the log by now, waiting for its replication)
        produce.gates[2].set()
        await asyncio.wait_for(asyncio.gather(second, third), 5)
        await settle()
        return partition.log.failovers

    failovers = asyncio.run(scenario())
    # The first snapshot was due while the third commit was in the log, unapplied; a
    # failover right after it (before any later snapshot) must still find all three.
    assert failovers, "no snapshot was taken"
    groups = failovers[0]
    assert groups["g"].offsets[("t", 0)].offset == 1
    assert groups["g"].offsets[("t", 1)].offset == 5
    assert "h" in groups, "the third commit was dropped with the log before the snapshot"
    assert groups["h"].offsets[("t", 2)].offset == 7
