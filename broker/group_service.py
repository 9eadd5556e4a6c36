"""GroupService servicer: decode, call the group coordinator, encode. Errors become the
reply's ErrorCode (NOT_COORDINATOR tells the client to find the coordinator again)."""

from __future__ import annotations

import logging
from typing import Any

import grpc

from raftka.broker.core import BrokerCore
from raftka.broker.errors import to_error
from raftka.broker.grpc_guard import guarded
from raftka.broker.listeners import DEFAULT_LISTENER
from raftka.proto.raftka.v1 import group_pb2, group_pb2_grpc

log = logging.getLogger("raftka.groups")


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

    @guarded
    async def FindCoordinator(
        self, request: group_pb2.FindCoordinatorRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.FindCoordinatorResponse:
        return await self._directory.find_coordinator(request.group_id, self._listener)

    @guarded
    async def ConsumerGroupHeartbeat(
        self, request: group_pb2.ConsumerGroupHeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.ConsumerGroupHeartbeatResponse:
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
        try:
            return self._coordinator.fetch_offsets(request)
        except Exception as exc:
            return _failed(group_pb2.OffsetFetchResponse(), exc)

    @guarded
    async def DescribeGroup(
        self, request: group_pb2.DescribeGroupRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.DescribeGroupResponse:
        try:
            return self._coordinator.describe(request.group_id)
        except Exception as exc:
            return _failed(group_pb2.DescribeGroupResponse(group_id=request.group_id), exc)

    @guarded
    async def DeleteGroup(
        self, request: group_pb2.DeleteGroupRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.DeleteGroupResponse:
        try:
            await self._coordinator.delete(request.group_id)
        except Exception as exc:
            return _failed(group_pb2.DeleteGroupResponse(), exc)
        return group_pb2.DeleteGroupResponse()

    @guarded
    async def DeleteOffsets(
        self, request: group_pb2.DeleteOffsetsRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.DeleteOffsetsResponse:
        try:
            return await self._coordinator.delete_offsets(request)
        except Exception as exc:
            return _failed(group_pb2.DeleteOffsetsResponse(), exc)

    @guarded
    async def ListGroups(
        self, request: group_pb2.ListGroupsRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.ListGroupsResponse:
        return await self._directory.list_groups(request.local_only)
