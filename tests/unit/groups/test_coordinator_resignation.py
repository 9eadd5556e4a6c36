"""A coordinator that stops leading its __consumer_offsets partition answers the JoinGroup and
SyncGroup requests it was holding with NOT_COORDINATOR at once (Kafka's onResignation), so the
clients look the coordinator up again. Before this, the waits were dropped with the group's
state and a client waited out its rebalance timeout (librdkafka: max.poll.interval.ms, 300 s)
— seen as a confluent consumer that read nothing for a minute after a preferred-leader election
moved its group's coordinator (test_secured_cluster's leader-kill test in CI)."""

from __future__ import annotations

import asyncio

from raftka.broker.groups.classic_protocol import ClassicProtocol
from raftka.broker.groups.coordinator import GroupCoordinator, GroupSettings
from tests.unit.groups.test_coordinator_snapshot import (
    FakePartition,
    FakeReplicas,
    GatedProduce,
    settle,
)

PROTOCOLS = [("range", b"meta")]


class Clock:
    def __init__(self) -> None:
        self.now_ms = 1_000

    def __call__(self) -> int:
        return self.now_ms


async def _coordinator(clock: Clock) -> tuple[GroupCoordinator, FakePartition]:
    partition = FakePartition()
    coordinator = GroupCoordinator(
        FakeReplicas(partition),  # type: ignore[arg-type]
        GatedProduce(partition, held=set()),  # type: ignore[arg-type]
        clock,
        GroupSettings(snapshot_every_records=1_000),
    )
    coordinator.refresh()
    await settle()
    return coordinator, partition


def _join(protocol: ClassicProtocol) -> asyncio.Future[dict]:
    return asyncio.ensure_future(protocol.join("g", "", "app", "consumer", PROTOCOLS,
                                               10_000, 300_000, False))


def _resign(coordinator: GroupCoordinator, partition: FakePartition) -> None:
    partition.is_leader = False  # type: ignore[misc]
    coordinator.refresh()


def test_a_pending_join_is_answered_not_coordinator_when_leadership_moves():
    async def scenario() -> dict:
        clock = Clock()
        coordinator, partition = await _coordinator(clock)
        join = _join(ClassicProtocol(coordinator))
        await settle()
        assert not join.done(), "the group's initial rebalance delay keeps the join waiting"
        _resign(coordinator, partition)
        return await asyncio.wait_for(join, 1)

    assert asyncio.run(scenario())["error_code"] == "NOT_COORDINATOR"


def test_a_pending_sync_is_answered_not_coordinator_when_leadership_moves():
    async def scenario() -> dict:
        clock = Clock()
        coordinator, partition = await _coordinator(clock)
        protocol = ClassicProtocol(coordinator)
        joins = [_join(protocol), _join(protocol)]
        await settle()
        clock.now_ms += 60_000  # past the initial delay: the next tick completes the join
        coordinator.expire_members()
        answers = [await asyncio.wait_for(join, 1) for join in joins]
        follower = next(a for a in answers if a["member_id"] != a["leader"])
        sync = asyncio.ensure_future(
            protocol.sync("g", follower["member_id"], follower["generation_id"], {}))
        await settle()
        assert not sync.done(), "a follower's sync waits for the leader's assignments"
        _resign(coordinator, partition)
        return await asyncio.wait_for(sync, 1)

    assert asyncio.run(scenario())["error_code"] == "NOT_COORDINATOR"
