"""Operations on this broker's partition logs for every adapter: DeleteRecords and
DescribeLogDirs (gRPC AdminService and the Kafka listener).

DeleteRecords runs on the leader only: it advances the leader's log start offset (whole
segments below it are deleted, the offset is checkpointed, so a restart keeps it), and the
followers follow through the log start offset every fetch reply carries (fetcher.py), as in
Kafka. The answer does not wait for the followers (Kafka's does, in a purgatory): followers
fetch continuously, so they follow within a fetch round; a follower elected leader before
its next fetch keeps its older start until the next DeleteRecords or retention run.

The decision (which offset, or which error) is `plan_delete` below, pure; the rest is I/O.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from raftka.broker.errors import BrokerError, BrokerFencedError, to_error
from raftka.broker.partition import TopicPartition
from raftka.broker.replica_manager import ReplicaManager
from raftka.cluster.image import CONSUMER_OFFSETS_TOPIC
from raftka.proto.raftka.v1 import admin_pb2, common_pb2

Code = common_pb2.ErrorCode
# DeleteRecords' "up to the high watermark" offset (Kafka's DeleteRecordsRequest.HIGH_WATERMARK).
HIGH_WATERMARK = -1


@dataclass(frozen=True, slots=True)
class DeletePlan:
    """Either the new log start offset (`target`) or why not (`code`, `message`)."""

    target: int = -1
    code: int = 0
    message: str = ""


def plan_delete(requested: int, log_start_offset: int, high_watermark: int) -> DeletePlan:
    """Where DeleteRecords moves the log start offset. Kafka's rules: -1 means the high
    watermark; beyond the high watermark (or another negative) is OFFSET_OUT_OF_RANGE; at or
    below the current start changes nothing and answers the current start."""
    if requested == HIGH_WATERMARK:
        requested = high_watermark
    if requested < 0 or requested > high_watermark:
        return DeletePlan(code=Code.OFFSET_OUT_OF_RANGE, message=(
            f"offset {requested} is outside [0, {high_watermark}] (the high watermark; "
            "-1 means up to it)"))
    return DeletePlan(target=max(requested, log_start_offset))


class LogAdmin:
    def __init__(self, replicas: ReplicaManager, log_dir: str,
                 lease_problem: Callable[[], str | None] = lambda: None) -> None:
        """`lease_problem`: why this broker must not act as a leader now (its lease with the
        controller lapsed: a successor may lead already), or None; as for produce."""
        self._replicas = replicas
        self._log_dir = log_dir
        self._lease_problem = lease_problem

    async def delete_records(
        self, request: admin_pb2.DeleteRecordsRequest
    ) -> admin_pb2.DeleteRecordsResponse:
        response = admin_pb2.DeleteRecordsResponse()
        for item in request.partitions:
            result = response.partitions.add(topic=item.topic, partition=item.partition,
                                             low_watermark=-1)
            try:
                result.low_watermark = await self._delete_one(item)
            except Exception as exc:  # per partition: NOT_LEADER, out of range, disk errors
                code, message = to_error(exc)
                result.error_code = code  # type: ignore[assignment]
                result.error_message = message
        return response

    async def _delete_one(self, item: admin_pb2.DeleteRecordsPartition) -> int:
        if item.topic == CONSUMER_OFFSETS_TOPIC:
            raise _error(Code.INVALID_REQUEST, f"records of the internal topic {item.topic} "
                         "are deleted by the group coordinator only")
        partition = self._replicas.leader_partition(TopicPartition(item.topic, item.partition))
        problem = self._lease_problem()
        if problem is not None:
            raise BrokerFencedError(problem)
        plan = plan_delete(item.offset, partition.log_start_offset, partition.high_watermark)
        if plan.code:
            raise _error(plan.code, f"{partition.tp}: {plan.message}")
        if plan.target > partition.log_start_offset:
            await self._replicas.on_writer(partition.log.advance_start_offset, plan.target)
        return partition.log_start_offset

    def describe_log_dirs(self) -> admin_pb2.DescribeLogDirsResponse:
        response = admin_pb2.DescribeLogDirsResponse(
            broker_id=self._replicas.broker_id, log_dir=self._log_dir,
            total_bytes=-1, usable_bytes=-1)
        if os.path.isdir(self._log_dir):
            usage = shutil.disk_usage(self._log_dir)
            response.total_bytes, response.usable_bytes = usage.total, usage.free
        for tp, partition in sorted(self._replicas.partitions.items(),
                                    key=lambda item: (item[0].topic, item[0].partition)):
            response.partitions.add(
                topic=tp.topic, partition=tp.partition, size_bytes=partition.log.size_bytes,
                # A follower's high watermark is the leader's, as its last fetch heard it.
                offset_lag=offset_lag(partition.is_leader, partition.log_end_offset,
                                      partition.high_watermark),
                leader=partition.is_leader, log_start_offset=partition.log_start_offset,
                log_end_offset=partition.log_end_offset,
                high_watermark=partition.high_watermark,
                recovery_point=partition.log.recovery_point)
        return response


def offset_lag(leader: bool, log_end_offset: int, leader_high_watermark: int) -> int:
    """Kafka's DescribeLogDirs offset_lag: how far this replica's log end is behind the
    leader's high watermark (0 on the leader, never negative; -1 when unknown)."""
    if leader:
        return 0
    if leader_high_watermark < 0:
        return -1
    return max(0, leader_high_watermark - log_end_offset)


def _error(code: int, message: str) -> BrokerError:
    error = BrokerError(message)
    error.code = code
    return error
