"""Leaders ask the controller to shrink or expand their partitions' ISR, in batches.

How it works: periodically, for each partition this broker leads, the pure LeaderState says
whether a follower fell behind for longer than replica.lag.time.max.ms or caught up again. The
proposal is marked pending (the high watermark then counts the joining follower, see
leader_state.py) and queued; the ISR actually changes when the controller's record comes back
through metadata. A refused or failed proposal is dropped and re-evaluated on the next round.

Why batches (Kafka's AlterPartitionManager): with one request per partition, a broker that
leads thousands of partitions sent thousands of AlterPartition calls when one follower died,
each its own metadata commit, and the controller fell behind. Now every pending change goes
in one request (the newest proposal per partition wins), with one request in flight at a
time; changes queued meanwhile go in the next one, sent as soon as the reply arrives. The
controller judges each partition on its own and commits the accepted ones together.

The queue and the reading of a reply are pure (`PendingIsrChanges`, `apply_results`); the
task that sends is the thin shell around them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from raftka.broker.metrics import BrokerMetrics
from raftka.broker.partition import Partition, TopicPartition
from raftka.broker.replication.leader_state import LeaderState
from raftka.proto.raftka.v1 import common_pb2, controller_pb2

log = logging.getLogger("raftka.replication")
Code = common_pb2.ErrorCode
AlterPartition = Callable[
    [controller_pb2.AlterPartitionRequest], Awaitable[controller_pb2.AlterPartitionResponse]
]


@dataclass(frozen=True, slots=True)
class Proposal:
    """One queued ISR change: the leader state it was made on and the ISR it asks for.
    Both are compared by identity: the proposal stands only while `state` is still the
    partition's leader state and `isr` is still that state's pending ISR."""

    partition: Partition
    state: LeaderState
    isr: frozenset[int]

    @property
    def current(self) -> bool:
        return self.partition.leader_state is self.state and self.state.pending_isr is self.isr


class PendingIsrChanges:
    """The proposals waiting for the next request, one per partition (the newest wins)."""

    def __init__(self) -> None:
        self._queued: dict[TopicPartition, Proposal] = {}

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, proposal: Proposal) -> None:
        self._queued[proposal.partition.tp] = proposal

    def take(self) -> list[Proposal]:
        """Everything queued that still stands, in the order first queued; the queue empties.
        A proposal overtaken by the controller (new ISR or leadership) is dropped here."""
        taken = [p for p in self._queued.values() if p.current]
        self._queued.clear()
        return taken


def build_request(
    broker_id: int, broker_epoch: int, proposals: Iterable[Proposal]
) -> controller_pb2.AlterPartitionRequest:
    request = controller_pb2.AlterPartitionRequest(broker_id=broker_id, broker_epoch=broker_epoch)
    for proposal in proposals:
        partition = proposal.partition
        request.partitions.add(
            topic=partition.tp.topic,
            partition=partition.tp.partition,
            leader_epoch=partition.leader_epoch,
            partition_epoch=partition.partition_epoch,
            new_isr=sorted(proposal.isr),
        )
    return request


def apply_results(
    proposals: list[Proposal],
    request: controller_pb2.AlterPartitionRequest,
    response: controller_pb2.AlterPartitionResponse | None,
) -> list[tuple[Proposal, str]]:
    """Clear the pending ISR of every proposal that will not come back through metadata:
    refused, or the whole request failed (`response` None or a request-wide error), or
    accepted without a change. Returns (proposal, why) for those dropped.

    An accepted change keeps its pending ISR until the committed record arrives
    (LeaderState.update_isr): until then the high watermark must keep counting a joining
    follower. A pending ISR is only cleared while it is still the one this request carried."""
    dropped: list[tuple[Proposal, str]] = []
    results: dict[tuple[str, int], controller_pb2.AlterPartitionResult] = {}
    failure: str | None = None
    if response is None:
        failure = "the request failed"
    elif response.error_code != Code.NONE:
        failure = f"{Code.Name(response.error_code)} {response.error_message}"
    else:
        results = {(r.topic, r.partition): r for r in response.partitions}
    for proposal, sent in zip(proposals, request.partitions, strict=True):
        tp = proposal.partition.tp
        why = failure
        if why is None:
            result = results.get((tp.topic, tp.partition))
            if result is None:
                why = "no result for it in the reply"
            elif result.error_code != Code.NONE:
                why = f"{Code.Name(result.error_code)} {result.error_message}"
            elif result.partition_epoch == sent.partition_epoch:
                why = "accepted without a change"  # the ISR already was the one asked for
        if why is not None:
            if proposal.current:
                proposal.state.pending_isr = None
            dropped.append((proposal, why))
    return dropped


class IsrUpdater:
    def __init__(
        self,
        broker_id: int,
        alter: AlterPartition,
        broker_epoch: Callable[[], int],
        clock_ms: Callable[[], int],
        lag_max_ms: int,
        metrics: BrokerMetrics | None = None,
        eligible: Callable[[int], bool] | None = None,
    ) -> None:
        """`eligible(broker_id)`: whether a broker may join an ISR now (registered and
        unfenced in this broker's metadata)."""
        self.broker_id = broker_id
        self._eligible = eligible
        self._metrics = metrics
        self._alter = alter
        self._broker_epoch = broker_epoch
        self._clock_ms = clock_ms
        self._lag_max_ms = lag_max_ms
        self._pending = PendingIsrChanges()
        self._sender: asyncio.Task[None] | None = None
        # Requests sent and partitions they carried (for tests and logs).
        self.requests_sent = 0
        self.partitions_sent = 0

    def run_once(self, partitions: Iterable[Partition]) -> int:
        """Queue the proposals that are due and make sure a request goes out; returns how
        many were queued."""
        now_ms = self._clock_ms()
        queued = 0
        for partition in partitions:
            state = partition.leader_state
            if state is None:
                continue
            proposed = state.proposed_isr(now_ms, self._lag_max_ms, self._eligible)
            if proposed is None:
                continue
            state.pending_isr = proposed
            log.info(
                "%s: proposing ISR %s (now %s)", partition.tp, sorted(proposed),
                list(partition.isr),
            )
            self._pending.add(Proposal(partition, state, proposed))
            queued += 1
        if len(self._pending) and (self._sender is None or self._sender.done()):
            self._sender = asyncio.create_task(self._send_while_pending())
        return queued

    async def _send_while_pending(self) -> None:
        """One request at a time; whatever was queued while it was out goes next."""
        while True:
            proposals = self._pending.take()
            if not proposals:
                return
            request = build_request(self.broker_id, self._broker_epoch(), proposals)
            self.requests_sent += 1
            self.partitions_sent += len(proposals)
            try:
                response: controller_pb2.AlterPartitionResponse | None = await self._alter(
                    request
                )
            except Exception as exc:
                log.warning("AlterPartition of %d partition(s) failed: %s", len(proposals), exc)
                response = None
            dropped = apply_results(proposals, request, response)
            for proposal, why in dropped[:10]:
                log.info("%s: ISR change not made: %s", proposal.partition.tp, why)
            if len(dropped) > 10:
                log.info("... and %d more ISR change(s) not made", len(dropped) - 10)
        # (ISR shrinks and expands are counted when the leader applies the committed ISR:
        # ReplicaManager.on_leader_isr_change, which also sees the controller's own changes.)
