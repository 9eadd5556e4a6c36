"""The coordinator's DeleteGroup and OffsetDelete over a stand-in __consumer_offsets log:
what they refuse, and that what they delete stays deleted when a new coordinator replays the
log (the record is written before memory changes)."""

from __future__ import annotations

import asyncio

import pytest

from raftka.broker.groups.classic import ClassicMember
from raftka.broker.groups.coordinator import CoordinatorError, GroupCoordinator, GroupSettings
from raftka.broker.groups.state import CommittedOffset
from raftka.proto.raftka.v1 import common_pb2, group_pb2
from tests.unit.groups.test_coordinator_snapshot import (
    FakePartition,
    FakeReplicas,
    GatedProduce,
    replay_log,
    settle,
)

Code = common_pb2.ErrorCode


async def _coordinator() -> tuple[GroupCoordinator, FakePartition]:
    partition = FakePartition()
    coordinator = GroupCoordinator(
        FakeReplicas(partition),  # type: ignore[arg-type]
        GatedProduce(partition, held=set()),  # type: ignore[arg-type]
        lambda: 1_000,
        GroupSettings(snapshot_every_records=1_000),
    )
    coordinator.refresh()
    await settle()
    return coordinator, partition


def _request(group: str, *topics: str) -> group_pb2.DeleteOffsetsRequest:
    return group_pb2.DeleteOffsetsRequest(
        group_id=group, topics=[group_pb2.TopicPartitions(topic=t) for t in topics])


def test_offset_delete_is_durable_and_a_missing_group_is_not_found():
    async def scenario():
        coordinator, partition = await _coordinator()
        await coordinator.store_offsets("g", {("t", 0): CommittedOffset(3, "", 1),
                                              ("t", 1): CommittedOffset(4, "", 1)})
        reply = await coordinator.delete_offsets(_request("g", "t"))
        with pytest.raises(CoordinatorError) as missing:
            await coordinator.delete_offsets(_request("nobody", "t"))
        return reply, replay_log(partition.log), missing.value

    reply, replayed, missing = asyncio.run(scenario())
    assert [(t.topic, t.error_code, t.partitions_deleted) for t in reply.topics] == [
        ("t", 0, 2)]
    assert replayed["g"].offsets == {}
    assert missing.code == Code.GROUP_ID_NOT_FOUND


def test_a_classic_group_with_members_is_not_deleted_even_without_offsets():
    async def scenario():
        coordinator, partition = await _coordinator()
        group = coordinator.classic_group("busy")
        group.members["m"] = ClassicMember("m", "c", 10_000, 10_000, "consumer", [], 1_000)
        with pytest.raises(CoordinatorError) as refused:
            await coordinator.delete("busy")
        return refused.value, partition.log.end

    refused, log_end = asyncio.run(scenario())
    assert refused.code == Code.NON_EMPTY_GROUP and "1 member" in str(refused)
    assert log_end == 0  # nothing written
