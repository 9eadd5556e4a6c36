"""The broker side of batched AlterPartition: pending changes coalesce (newest per
partition), one request carries them all with one in flight, and a reply clears exactly the
pending ISRs that will not come back through metadata."""

from __future__ import annotations

import asyncio

from raftka.broker.partition import TopicPartition
from raftka.broker.replication.isr_updater import (
    IsrUpdater,
    PendingIsrChanges,
    Proposal,
    apply_results,
    build_request,
)
from raftka.broker.replication.leader_state import LeaderState
from raftka.proto.raftka.v1 import common_pb2, controller_pb2

Code = common_pb2.ErrorCode
LAG_MS = 1_000


class FakePartition:
    """What the updater reads of a Partition."""

    def __init__(self, index: int, now_ms: int = 0) -> None:
        self.tp = TopicPartition("t", index)
        self.leader_epoch = 3
        self.partition_epoch = 7
        self.isr = (1, 2, 3)
        self.leader_state: LeaderState | None = LeaderState(1, (1, 2, 3), (1, 2, 3), now_ms, 0, 0)


def proposal(partition: FakePartition, isr: set[int]) -> Proposal:
    state = partition.leader_state
    assert state is not None
    state.pending_isr = frozenset(isr)
    return Proposal(partition, state, state.pending_isr)  # type: ignore[arg-type]


def test_the_newest_proposal_per_partition_wins_and_overtaken_ones_are_dropped():
    pending = PendingIsrChanges()
    a, b, c = FakePartition(0), FakePartition(1), FakePartition(2)
    pending.add(proposal(a, {1, 2}))
    pending.add(proposal(b, {1, 3}))
    pending.add(proposal(a, {1}))  # replaces the first for partition 0
    pending.add(proposal(c, {1, 2}))
    c.leader_state = None  # c lost leadership before the request went out
    taken = pending.take()
    assert [(p.partition.tp.partition, set(p.isr)) for p in taken] == [(0, {1}), (1, {1, 3})]
    assert len(pending) == 0 and pending.take() == []


def test_one_request_names_every_partition_at_its_epochs():
    a, b = FakePartition(0), FakePartition(1)
    b.partition_epoch = 9
    request = build_request(1, 42, [proposal(a, {1, 3}), proposal(b, {1})])
    assert (request.broker_id, request.broker_epoch) == (1, 42)
    assert [(i.partition, i.leader_epoch, i.partition_epoch, list(i.new_isr))
            for i in request.partitions] == [(0, 3, 7, [1, 3]), (1, 3, 9, [1])]


def test_a_reply_clears_only_the_pending_isrs_that_will_not_arrive():
    parts = [FakePartition(i) for i in range(4)]
    proposals = [proposal(p, {1, 2}) for p in parts]
    request = build_request(1, 42, proposals)
    response = controller_pb2.AlterPartitionResponse()
    response.partitions.add(topic="t", partition=0, partition_epoch=8, isr=[1, 2])  # accepted
    response.partitions.add(topic="t", partition=1, error_code=Code.INVALID_UPDATE_VERSION,
                            partition_epoch=8)
    response.partitions.add(topic="t", partition=2, partition_epoch=7, isr=[1, 2])  # no change
    # partition 3: no result at all
    dropped = apply_results(proposals, request, response)
    assert [p.partition.tp.partition for p, _ in dropped] == [1, 2, 3]
    states = [p.leader_state for p in parts]
    assert states[0] is not None and states[0].pending_isr == {1, 2}  # until the record
    assert all(s is not None and s.pending_isr is None for s in states[1:])


def test_a_failed_request_clears_all_but_never_a_newer_proposal():
    a, b = FakePartition(0), FakePartition(1)
    proposals = [proposal(a, {1, 2}), proposal(b, {1, 2})]
    request = build_request(1, 42, proposals)
    # Meanwhile the controller's record for b arrived and b proposed again.
    assert b.leader_state is not None
    b.leader_state.update_isr({1, 2})
    newer = proposal(b, {1, 2, 3})
    failed = controller_pb2.AlterPartitionResponse(error_code=Code.NOT_CONTROLLER)
    assert len(apply_results(proposals, request, failed)) == 2
    assert a.leader_state is not None and a.leader_state.pending_isr is None
    assert b.leader_state.pending_isr is newer.isr
    assert len(apply_results(proposals, request, None)) == 2


def test_changes_queued_while_a_request_is_out_go_in_the_next_one():
    async def scenario() -> list[list[int]]:
        now = [0]
        sent: list[list[int]] = []
        release = asyncio.Event()

        async def alter(request: controller_pb2.AlterPartitionRequest):
            sent.append([i.partition for i in request.partitions])
            await release.wait()
            reply = controller_pb2.AlterPartitionResponse()
            for i in request.partitions:
                reply.partitions.add(topic=i.topic, partition=i.partition,
                                     partition_epoch=i.partition_epoch + 1, isr=i.new_isr)
            return reply

        updater = IsrUpdater(1, alter, lambda: 42, lambda: now[0], LAG_MS)
        parts = [FakePartition(i) for i in range(5)]
        now[0] = LAG_MS + 1  # every follower is late now
        assert updater.run_once(parts[:3]) == 3
        await asyncio.sleep(0)
        assert updater.run_once(parts) == 2  # the first three are pending already
        await asyncio.sleep(0)
        assert sent == [[0, 1, 2]]  # one in flight: the other two wait for its reply
        release.set()
        for _ in range(10):
            await asyncio.sleep(0)
        return sent

    sent = asyncio.run(scenario())
    assert sent == [[0, 1, 2], [3, 4]]
