"""GroupService servicer: decode, call the group coordinator, encode. Errors become the
reply's ErrorCode (NOT_COORDINATOR tells the client to find the coordinator again)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import grpc

from raftka.broker.errors import to_error
from raftka.broker.groups.offsets_log import OFFSETS_TOPIC, partition_for_group
from raftka.broker.listeners import DEFAULT_LISTENER
from raftka.broker.service import guarded
from raftka.proto.raftka.v1 import admin_pb2, common_pb2, group_pb2, group_pb2_grpc

if TYPE_CHECKING:
    from raftka.broker.server import BrokerServer

log = logging.getLogger("raftka.groups")
Code = common_pb2.ErrorCode
# Kept small by the coordinator's snapshots, not by retention; segments stay small so the
# log before a snapshot can be dropped soon.
OFFSETS_TOPIC_CONFIGS = {"retention.ms": "-1", "max.message.bytes": "16777216"}


def _failed(response: Any, exc: BaseException) -> Any:
    code, message = to_error(exc)
    response.error_code = code
    response.error_message = message
    return response


class GroupServicer(group_pb2_grpc.GroupServiceServicer):
    def __init__(self, server: BrokerServer, listener: str = DEFAULT_LISTENER) -> None:
        self._server = server
        self._listener = listener  # whose address FindCoordinator answers with
        self._creating: asyncio.Lock = asyncio.Lock()

    @property
    def _coordinator(self) -> Any:
        return self._server.group_coordinator

    async def _ensure_offsets_topic(self) -> None:
        server = self._server
        if OFFSETS_TOPIC in server.replica_manager.image.topics:
            return
        async with self._creating:
            if OFFSETS_TOPIC in server.replica_manager.image.topics:
                return
            live = len(server.replica_manager.image.unfenced_broker_ids())
            config = server.config
            request = admin_pb2.CreateTopicsRequest(
                topics=[
                    admin_pb2.NewTopic(
                        name=OFFSETS_TOPIC,
                        num_partitions=config.offsets_topic_num_partitions,
                        replication_factor=max(
                            1, min(config.offsets_topic_replication_factor, live)
                        ),
                        configs={
                            **OFFSETS_TOPIC_CONFIGS,
                            "segment.bytes": str(config.offsets_topic_segment_bytes),
                        },
                    )
                ]
            )
            response = await server.controller_client.call(
                "create_internal_topics", request, config.metadata_write_timeout_ms / 1000
            )
            result = response.topics[0]
            if result.error_code not in (Code.NONE, Code.TOPIC_ALREADY_EXISTS):
                log.warning("creating %s failed: %s", OFFSETS_TOPIC, result.error_message)
                return
            await server.wait_for_local_metadata(response)

    @guarded
    async def FindCoordinator(
        self, request: group_pb2.FindCoordinatorRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.FindCoordinatorResponse:
        return await self.find_coordinator(request)

    async def find_coordinator(
        self, request: group_pb2.FindCoordinatorRequest
    ) -> group_pb2.FindCoordinatorResponse:
        """Shared by the gRPC and Kafka listeners."""
        response = group_pb2.FindCoordinatorResponse(partition=-1)
        if not request.group_id:
            response.error_code = Code.INVALID_GROUP_ID
            response.error_message = "the group id is empty"
            return response
        try:
            await self._ensure_offsets_topic()
        except Exception as exc:
            return _failed(response, exc)
        image = self._server.replica_manager.image
        topic = image.topics.get(OFFSETS_TOPIC)
        if topic is None:
            response.error_code = Code.COORDINATOR_NOT_AVAILABLE
            response.error_message = f"{OFFSETS_TOPIC} does not exist yet"
            return response
        index = partition_for_group(request.group_id, len(topic.partitions))
        leader = topic.partitions[index].leader
        broker = image.brokers.get(leader)
        response.partition = index
        if broker is None or broker.fenced:
            response.error_code = Code.COORDINATOR_NOT_AVAILABLE
            response.error_message = f"{OFFSETS_TOPIC}-{index} has no leader right now"
            return response
        host, port = broker.grpc_endpoint(self._listener)
        response.coordinator.CopyFrom(
            common_pb2.BrokerEndpoint(
                broker_id=broker.broker_id,
                host=host,
                port=port,
                kafka_port=broker.kafka_port,
            )
        )
        return response

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
    async def ListGroups(
        self, request: group_pb2.ListGroupsRequest, context: grpc.aio.ServicerContext
    ) -> group_pb2.ListGroupsResponse:
        return await self.list_groups(request)

    async def list_groups(self, request: group_pb2.ListGroupsRequest
                          ) -> group_pb2.ListGroupsResponse:
        """Shared by the gRPC and Kafka listeners."""
        response = group_pb2.ListGroupsResponse()
        response.groups.extend(self._coordinator.list_local())
        if request.local_only:
            return response
        server = self._server
        image = server.replica_manager.image
        others = [
            b
            for b in image.brokers.values()
            if not b.fenced and b.broker_id != server.config.broker_id
        ]

        async def ask(broker: Any) -> tuple[int, group_pb2.ListGroupsResponse | None]:
            stub = group_pb2_grpc.GroupServiceStub(
                server.channels.get(f"{broker.host}:{broker.port}")
            )
            try:
                return broker.broker_id, await stub.ListGroups(
                    group_pb2.ListGroupsRequest(local_only=True), timeout=5
                )
            except grpc.aio.AioRpcError:
                return broker.broker_id, None

        for broker_id, answer in await asyncio.gather(*(ask(b) for b in others)):
            if answer is None:
                response.unreachable_brokers.append(broker_id)
            else:
                response.groups.extend(answer.groups)
        return response
