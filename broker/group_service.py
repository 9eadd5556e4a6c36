"""GroupService servicer: decode, call the group coordinator, encode. Errors become the
reply's ErrorCode (NOT_COORDINATOR tells the client to find the coordinator again)."""

from __future__ import annotations

import logging
from typing import Any

import grpc

from raftka.broker.core import BrokerCore
from raftka.broker.errors import to_error
from raftka.broker.grpc_guard import guarded
from raftka.broker.grpc_security import GrpcGate
from raftka.broker.internal_auth import method_path
from raftka.broker.listeners import DEFAULT_LISTENER
from raftka.cluster.acl import Operation, ResourceType
from raftka.proto.raftka.v1 import group_pb2, group_pb2_grpc

log = logging.getLogger("raftka.groups")
GROUP, TOPIC = ResourceType.GROUP, ResourceType.TOPIC


def _path(method: str) -> str:
    return method_path("GroupService", method)


def _failed(response: Any, exc: BaseException) -> Any:
    code, message = to_error(exc)
    response.error_code = code
    response.error_message = message
    return response


class GroupServicer(group_pb2_grpc.GroupServiceServicer):
    def __init__(self, core: BrokerCore, listener: str = DEFAULT_LISTENER) -> None:
        self._coordinator = core.group_coordinator
        self._directory = core.group_directory
        self._listener = listener  # whose address FindCoordinator answers with
        self._gate = GrpcGate(core, listener)

    async def _group(self, context: grpc.aio.ServicerContext, method: str, op: Operation,
                     group_id: str) -> str:
        """The caller, once it may `op` the group (else the call is aborted)."""
        principal = await self._gate.caller(context, _path(method))
        await self._gate.require(context, principal, op, GROUP, (group_id,))
        return principal

    @guarded
    async def FindCoordinator(
        self, request: group_pb2.FindCoordinatorRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.FindCoordinatorResponse:
        await self._group(context, "FindCoordinator", Operation.DESCRIBE, request.group_id)
        return await self._directory.find_coordinator(request.group_id, self._listener)

    @guarded
    async def ConsumerGroupHeartbeat(
        self, request: group_pb2.ConsumerGroupHeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.ConsumerGroupHeartbeatResponse:
        principal = await self._group(context, "ConsumerGroupHeartbeat", Operation.READ,
                                      request.group_id)
        await self._gate.require(context, principal, Operation.DESCRIBE, TOPIC,
                                 request.subscribed_topic_names)
        try:
            return self._coordinator.heartbeat(request)
        except Exception as exc:
            return _failed(
                group_pb2.ConsumerGroupHeartbeatResponse(
                    member_id=request.member_id, member_epoch=request.member_epoch
                ),
                exc,
            )

    @guarded
    async def OffsetCommit(
        self, request: group_pb2.OffsetCommitRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.OffsetCommitResponse:
        principal = await self._group(context, "OffsetCommit", Operation.READ, request.group_id)
        await self._gate.require(context, principal, Operation.READ, TOPIC,
                                 (p.topic for p in request.partitions))
        try:
            return await self._coordinator.commit(request)
        except Exception as exc:
            response = _failed(group_pb2.OffsetCommitResponse(), exc)
            for item in request.partitions:
                response.partitions.add(
                    topic=item.topic,
                    partition=item.partition,
                    error_code=response.error_code,
                    error_message=response.error_message,
                )
            return response

    @guarded
    async def OffsetFetch(
        self, request: group_pb2.OffsetFetchRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.OffsetFetchResponse:
        principal = await self._group(context, "OffsetFetch", Operation.DESCRIBE,
                                      request.group_id)
        await self._gate.require(context, principal, Operation.DESCRIBE, TOPIC,
                                 (p.topic for p in request.partitions))
        try:
            return self._coordinator.fetch_offsets(request)
        except Exception as exc:
            return _failed(group_pb2.OffsetFetchResponse(), exc)

    @guarded
    async def DescribeGroup(
        self, request: group_pb2.DescribeGroupRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.DescribeGroupResponse:
        await self._group(context, "DescribeGroup", Operation.DESCRIBE, request.group_id)
        try:
            return self._coordinator.describe(request.group_id)
        except Exception as exc:
            return _failed(group_pb2.DescribeGroupResponse(group_id=request.group_id), exc)

    @guarded
    async def DeleteGroup(
        self, request: group_pb2.DeleteGroupRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.DeleteGroupResponse:
        await self._group(context, "DeleteGroup", Operation.DELETE, request.group_id)
        try:
            await self._coordinator.delete(request.group_id)
        except Exception as exc:
            return _failed(group_pb2.DeleteGroupResponse(), exc)
        return group_pb2.DeleteGroupResponse()

    @guarded
    async def DeleteOffsets(
        self, request: group_pb2.DeleteOffsetsRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.DeleteOffsetsResponse:
        principal = await self._group(context, "DeleteOffsets", Operation.DELETE,
                                      request.group_id)
        await self._gate.require(context, principal, Operation.READ, TOPIC,
                                 (t.topic for t in request.topics))
        try:
            return await self._coordinator.delete_offsets(request)
        except Exception as exc:
            return _failed(group_pb2.DeleteOffsetsResponse(), exc)

    @guarded
    async def ListGroups(
        self, request: group_pb2.ListGroupsRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.ListGroupsResponse:
        principal = await self._gate.caller(context, _path("ListGroups"))
        response = await self._directory.list_groups(request.local_only)
        for index in reversed(range(len(response.groups))):
            if not self._gate.allowed(context, principal, Operation.DESCRIBE, GROUP,
                                      response.groups[index].group_id):
                del response.groups[index]
        return response
