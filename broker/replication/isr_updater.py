"""Leaders ask the controller to shrink or expand their partitions' ISR.

How it works: periodically, for each partition this broker leads, the pure LeaderState says
whether a follower fell behind for longer than replica.lag.time.max.ms or caught up again. The
proposal is marked pending (the high watermark then counts the joining follower, see
leader_state.py) and sent as AlterPartition; the ISR actually changes when the controller's
record comes back through metadata. A refused or failed proposal is dropped and re-evaluated
on the next round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from raftka.broker.metrics import BrokerMetrics
from raftka.broker.partition import Partition
from raftka.proto.raftka.v1 import common_pb2, controller_pb2

log = logging.getLogger("raftka.replication")
Code = common_pb2.ErrorCode
AlterPartition = Callable[
    [controller_pb2.AlterPartitionRequest], Awaitable[controller_pb2.AlterPartitionResponse]
]


class IsrUpdater:
    def __init__(
        self,
        broker_id: int,
        alter: AlterPartition,
        broker_epoch: Callable[[], int],
        clock_ms: Callable[[], int],
        lag_max_ms: int,
        metrics: BrokerMetrics | None = None,
    ) -> None:
        self.broker_id = broker_id
        self._metrics = metrics
        self._alter = alter
        self._broker_epoch = broker_epoch
        self._clock_ms = clock_ms
        self._lag_max_ms = lag_max_ms
        self._in_flight: set[asyncio.Task[None]] = set()

    def run_once(self, partitions: Iterable[Partition]) -> int:
        """Send the proposals that are due; returns how many were sent."""
        now_ms = self._clock_ms()
        sent = 0
        for partition in partitions:
            state = partition.leader_state
            if state is None:
                continue
            proposed = state.proposed_isr(now_ms, self._lag_max_ms)
            if proposed is None:
                continue
            state.pending_isr = proposed
            task = asyncio.create_task(self._send(partition, proposed))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            sent += 1
        return sent

    async def _send(self, partition: Partition, proposed: frozenset[int]) -> None:
        state = partition.leader_state
        request = controller_pb2.AlterPartitionRequest(
            broker_id=self.broker_id,
            broker_epoch=self._broker_epoch(),
            topic=partition.tp.topic,
            partition=partition.tp.partition,
            leader_epoch=partition.leader_epoch,
            partition_epoch=partition.partition_epoch,
            new_isr=sorted(proposed),
        )
        log.info(
            "%s: proposing ISR %s (now %s)", partition.tp, sorted(proposed), list(partition.isr)
        )
        try:
            response = await self._alter(request)
        except Exception as exc:
            log.warning("%s: AlterPartition failed: %s", partition.tp, exc)
            response = None
        if response is None or response.error_code != Code.NONE:
            if response is not None:
                log.info(
                    "%s: ISR change refused: %s %s",
                    partition.tp,
                    Code.Name(response.error_code),
                    response.error_message,
                )
            if state is not None and state is partition.leader_state:
                state.pending_isr = None
        # (ISR shrinks and expands are counted when the leader applies the committed ISR:
        # ReplicaManager.on_leader_isr_change, which also sees the controller's own changes.)
