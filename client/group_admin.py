"""Consumer group administration: list, describe (with lag), reset offsets, delete.

Every group call goes to the group's coordinator, found through FindCoordinator on any broker;
a coordinator that moved (NOT_COORDINATOR) is looked up again until the request timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from raftka.client.errors import (
    AuthenticationError,
    AuthorizationError,
    RaftkaError,
    error_for,
)
from raftka.client.metadata import ClusterMetadata
from raftka.client.transport import Connections, translate_rpc_error
from raftka.proto.raftka.v1 import broker_pb2, common_pb2, group_pb2, group_pb2_grpc

Code = common_pb2.ErrorCode
T = TypeVar("T")
_RETRY = {Code.NOT_COORDINATOR, Code.COORDINATOR_NOT_AVAILABLE, Code.COORDINATOR_LOAD_IN_PROGRESS}


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int | None


class GroupAdmin:
    def __init__(
        self, connections: Connections, metadata: ClusterMetadata, timeout_s: float
    ) -> None:
        self._connections = connections
        self._metadata = metadata
        self._timeout_s = timeout_s

    def _stub(self, address: str) -> group_pb2_grpc.GroupServiceStub:
        return group_pb2_grpc.GroupServiceStub(self._connections.channel(address))

    def _coordinator(self, group_id: str) -> str:
        problems = []
        for address in self._metadata.candidates():
            try:
                reply = self._stub(address).FindCoordinator(
                    group_pb2.FindCoordinatorRequest(group_id=group_id), timeout=self._timeout_s
                )
            except grpc.RpcError as exc:
                error = translate_rpc_error(exc, address)
                if isinstance(error, (AuthenticationError, AuthorizationError)):
                    raise error from None  # another broker would refuse alike
                problems.append(str(error))
                continue
            if reply.error_code:
                raise error_for(reply.error_code, reply.error_message)
            return f"{reply.coordinator.host}:{reply.coordinator.port}"
        raise error_for(Code.BROKER_NOT_AVAILABLE, "; ".join(problems) or "no broker")

    def _at_coordinator(self, group_id: str, call: Callable[[Any], T]) -> T:
        """Run `call(stub)` on the coordinator, following it when it moves."""
        deadline = time.monotonic() + self._timeout_s
        while True:
            address = None
            try:
                address = self._coordinator(group_id)
                reply: Any = call(self._stub(address))
            except RaftkaError as exc:
                if not exc.retriable or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
                continue
            except grpc.RpcError as exc:
                error = translate_rpc_error(exc, address or "?")
                if time.monotonic() > deadline or isinstance(
                        error, (AuthenticationError, AuthorizationError)):
                    raise error from None
                time.sleep(0.2)
                continue
            if reply.error_code in _RETRY and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            if reply.error_code:
                raise error_for(reply.error_code, reply.error_message)
            return reply  # type: ignore[no-any-return]

    # ------------------------------------------------------------------------ reads
    def list_groups(self) -> group_pb2.ListGroupsResponse:
        last: Exception | None = None
        for address in self._metadata.candidates():
            try:
                return self._stub(address).ListGroups(
                    group_pb2.ListGroupsRequest(), timeout=self._timeout_s
                )
            except grpc.RpcError as exc:
                last = translate_rpc_error(exc, address)
        raise last or error_for(Code.BROKER_NOT_AVAILABLE, "no broker answered")

    def describe_group(self, group_id: str) -> group_pb2.DescribeGroupResponse:
        request = group_pb2.DescribeGroupRequest(group_id=group_id)
        return self._at_coordinator(
            group_id, lambda stub: stub.DescribeGroup(request, timeout=self._timeout_s)
        )

    def lag(self, description: group_pb2.DescribeGroupResponse) -> list[PartitionLag]:
        """Committed offset, end (high watermark, from the partition's leader) and lag of
        every partition of the topics the group subscribes to or has committed for. One
        ListOffsets per leader for all its partitions (a group on a 1,000-partition topic
        costs a call per broker, not per partition). End -1 and lag None: no leader
        answered for that partition, so its lag is not known (not 0)."""
        committed = {(o.topic, o.partition): o.offset for o in description.offsets}
        topics = {t for t, _ in committed} | {
            t for m in description.members for t in m.subscribed_topic_names
        }
        self._metadata.refresh()
        wanted = [(topic, info.partition) for topic in sorted(topics)
                  for info in self._metadata.partitions_for(topic) or []]
        ends = self._end_offsets(wanted)
        out = []
        for topic, partition in wanted:
            end = ends.get((topic, partition), -1)
            done = committed.get((topic, partition))
            lag = None if done is None or done < 0 or end < 0 else max(0, end - done)
            out.append(PartitionLag(topic, partition, done, end, lag))
        return out

    def _end_offsets(self, wanted: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        by_leader: dict[str, list[tuple[str, int]]] = {}
        for topic, partition in wanted:
            address = self._metadata.leader_address(topic, partition)
            if address is not None:
                by_leader.setdefault(address, []).append((topic, partition))
        ends: dict[tuple[str, int], int] = {}
        for address, partitions in by_leader.items():
            request = broker_pb2.ListOffsetsRequest(partitions=[
                broker_pb2.ListOffsetsPartition(topic=topic, partition=partition,
                                                timestamp_ms=-1)
                for topic, partition in partitions])
            try:
                reply = self._connections.broker(address).ListOffsets(
                    request, timeout=self._timeout_s)
            except grpc.RpcError:
                continue
            for answer in reply.partitions:
                if not answer.error_code:
                    ends[(answer.topic, answer.partition)] = answer.offset
        return ends

    # ----------------------------------------------------------------------- writes
    def reset_offsets(
        self, group_id: str, topic: str, *, to: str, offset: int = 0
    ) -> dict[int, int]:
        """Set the group's committed offset of every partition of `topic` to the earliest,
        the latest, or a given offset. Refused (NON_EMPTY_GROUP) while it has members."""
        infos = self._metadata.ensure_topic(topic, allow_auto_create=False)
        targets: dict[int, int] = {}
        for info in infos:
            if to == "offset":
                targets[info.partition] = offset
            else:
                targets[info.partition] = self._list_offset(
                    topic, info.partition, -2 if to == "earliest" else -1
                )
        request = group_pb2.OffsetCommitRequest(
            group_id=group_id,
            member_id="",
            member_epoch=-1,
            partitions=[
                group_pb2.OffsetCommitPartition(topic=topic, partition=p, offset=o)
                for p, o in targets.items()
            ],
        )
        reply = self._at_coordinator(
            group_id, lambda stub: stub.OffsetCommit(request, timeout=self._timeout_s)
        )
        for item in reply.partitions:
            if item.error_code:
                raise error_for(item.error_code, item.error_message)
        return targets

    def _list_offset(self, topic: str, partition: int, spec: int) -> int:
        address = self._metadata.leader_address(topic, partition)
        if address is None:
            raise error_for(Code.LEADER_NOT_AVAILABLE, f"{topic}-{partition} has no leader")
        request = broker_pb2.ListOffsetsRequest(
            partitions=[
                broker_pb2.ListOffsetsPartition(topic=topic, partition=partition, timestamp_ms=spec)
            ]
        )
        reply = (
            self._connections.broker(address)
            .ListOffsets(request, timeout=self._timeout_s)
            .partitions[0]
        )
        if reply.error_code:
            raise error_for(reply.error_code, reply.error_message)
        return int(reply.offset)

    def delete_group(self, group_id: str) -> None:
        request = group_pb2.DeleteGroupRequest(group_id=group_id)
        self._at_coordinator(
            group_id, lambda stub: stub.DeleteGroup(request, timeout=self._timeout_s)
        )

    def delete_offsets(
        self, group_id: str, topics: list[str]
    ) -> list[group_pb2.DeleteOffsetsTopicResult]:
        """Delete the group's committed offsets of `topics` (Kafka's OffsetDelete); a topic
        its members still consume answers GROUP_SUBSCRIBED_TO_TOPIC in its result."""
        request = group_pb2.DeleteOffsetsRequest(
            group_id=group_id, topics=[group_pb2.TopicPartitions(topic=t) for t in topics])
        reply = self._at_coordinator(
            group_id, lambda stub: stub.DeleteOffsets(request, timeout=self._timeout_s)
        )
        return list(reply.topics)
