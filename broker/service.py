"""gRPC servicers: decode, call the broker's core, encode. No business logic lives here.

Per-item problems travel as ErrorCode in the reply (see common.proto); only a failure of the
whole request becomes a gRPC status (INVALID_ARGUMENT for a request that cannot be served at
all, INTERNAL for a bug, with the reason in the status message).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from raftka.broker import metadata_view
from raftka.broker.controller_client import FORWARDED_HEADER
from raftka.broker.errors import to_error
from raftka.broker.internal_auth import CREATE_TOPICS, DELETE_TOPICS, FETCH, method_path
from raftka.broker.listeners import DEFAULT_LISTENER
from raftka.cluster.quorum import ControllerTimeoutError, NotControllerError
from raftka.proto.raftka.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    broker_pb2,
    broker_pb2_grpc,
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
)

if TYPE_CHECKING:
    from raftka.broker.server import BrokerServer

log = logging.getLogger("raftka.broker")
Code = common_pb2.ErrorCode
T = TypeVar("T")


def guarded(handler: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Turn an unexpected exception into INTERNAL with its message (and a log line)."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await handler(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            log.exception("%s failed", handler.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
            raise  # unreachable: abort raises

    return wrapper


def _forwarded(context: grpc.aio.ServicerContext) -> bool:
    return any(key == FORWARDED_HEADER for key, _ in (context.invocation_metadata() or ()))


class BrokerServicer(broker_pb2_grpc.BrokerServiceServicer):
    def __init__(self, server: BrokerServer, listener: str = DEFAULT_LISTENER) -> None:
        self._server = server
        self._listener = listener  # whose addresses Metadata answers with

    @guarded
    async def Produce(
        self, request: broker_pb2.ProduceRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.ProduceResponse:
        return await self._server.produce_path.produce(request)

    @guarded
    async def Fetch(
        self, request: broker_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.FetchResponse:
        if request.replica_id >= 0:  # a follower's fetch moves the HW and the ISR
            await self._server.internal_auth.require(context, FETCH)
        return await self._server.fetch_path.fetch(request)

    @guarded
    async def ListOffsets(
        self, request: broker_pb2.ListOffsetsRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.ListOffsetsResponse:
        return self._server.fetch_path.list_offsets(request)

    @guarded
    async def OffsetForLeaderEpoch(
        self,
        request: broker_pb2.OffsetForLeaderEpochRequest,
        context: grpc.aio.ServicerContext,
    ) -> broker_pb2.OffsetForLeaderEpochResponse:
        return self._server.fetch_path.offset_for_leader_epoch(request)

    @guarded
    async def InitProducerId(
        self, request: broker_pb2.InitProducerIdRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.InitProducerIdResponse:
        try:
            producer_id = await self._server.producer_ids.next_id()
        except Exception as exc:
            code, message = to_error(exc)
            return broker_pb2.InitProducerIdResponse(
                error_code=code,  # type: ignore[arg-type]
                error_message=message,
                producer_id=-1,
                producer_epoch=-1,
            )
        return broker_pb2.InitProducerIdResponse(producer_id=producer_id, producer_epoch=0)

    @guarded
    async def Metadata(
        self, request: broker_pb2.MetadataRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.MetadataResponse:
        server = self._server
        if request.allow_auto_topic_creation and server.config.auto_create_topics_enable:
            for name in request.topics:
                if name not in server.replica_manager.image.topics:
                    try:
                        await server.auto_create(name)
                    except Exception as exc:  # reported per topic below
                        log.info("auto-creating %s failed: %s", name, exc)
        return metadata_view.metadata_response(
            server.replica_manager.image, list(request.topics), server.controller_id(),
            self._listener,
        )


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, server: BrokerServer, listener: str = DEFAULT_LISTENER) -> None:
        self._server = server
        self._listener = listener

    async def _controller(
        self,
        method: str,
        request: Any,
        context: grpc.aio.ServicerContext,
        names: list[str],
        response_type: Callable[..., Any],
    ) -> Any:
        server = self._server
        forwarded = _forwarded(context)
        if forwarded:  # only brokers forward, and they may create internal topics
            await server.internal_auth.require(
                context, CREATE_TOPICS if method == "create_topics" else DELETE_TOPICS
            )
        try:
            if forwarded:
                if method == "create_topics":  # brokers may create internal topics
                    return await server.quorum.create_topics(request, allow_internal=True)
                return await getattr(server.quorum, method)(request)
            response = await server.controller_client.call(
                method, request, server.config.metadata_write_timeout_ms / 1000
            )
        except (NotControllerError, ControllerTimeoutError) as exc:
            code = (
                Code.NOT_CONTROLLER
                if isinstance(exc, NotControllerError)
                else Code.REQUEST_TIMED_OUT
            )
            response = response_type()
            for name in names:
                response.topics.add(name=name, error_code=code, error_message=str(exc))
            return response
        await server.wait_for_local_metadata(response)
        return response

    @guarded
    async def CreateTopics(
        self, request: admin_pb2.CreateTopicsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreateTopicsResponse:
        return await self._controller(
            "create_topics",
            request,
            context,
            [t.name for t in request.topics],
            admin_pb2.CreateTopicsResponse,
        )

    @guarded
    async def DeleteTopics(
        self, request: admin_pb2.DeleteTopicsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DeleteTopicsResponse:
        return await self._controller(
            "delete_topics", request, context, list(request.names), admin_pb2.DeleteTopicsResponse
        )

    @guarded
    async def ListTopics(
        self, request: admin_pb2.ListTopicsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListTopicsResponse:
        return metadata_view.list_topics(
            self._server.replica_manager.image, request.include_internal
        )

    @guarded
    async def DescribeTopics(
        self, request: admin_pb2.DescribeTopicsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DescribeTopicsResponse:
        server = self._server
        return metadata_view.describe_topics(
            server.replica_manager.image,
            list(request.names),
            server.config.topic_config_defaults(),
            server.local_offsets,
        )

    @guarded
    async def DescribeCluster(
        self, request: admin_pb2.DescribeClusterRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DescribeClusterResponse:
        server = self._server
        return metadata_view.describe_cluster(
            server.metadata_log.image, server.controller_id(), self._listener
        )


class ControllerServicer(controller_pb2_grpc.ControllerServiceServicer):
    """Broker-to-controller calls; answered only by the active controller."""

    def __init__(self, server: BrokerServer) -> None:
        self._server = server

    async def _local(
        self,
        method: str,
        request: Any,
        response_type: Callable[..., Any],
        context: grpc.aio.ServicerContext,
    ) -> Any:
        # Every controller call needs the cluster's credentials: without them anyone could
        # re-register a broker id (fencing it) or change an ISR.
        rpc = "".join(part.capitalize() for part in method.split("_"))
        await self._server.internal_auth.require(context, method_path("ControllerService", rpc))
        try:
            return await getattr(self._server.quorum, method)(request)
        except NotControllerError as exc:
            response = response_type(error_code=Code.NOT_CONTROLLER, error_message=str(exc))
            if "controller_id" in response.DESCRIPTOR.fields_by_name:
                response.controller_id = exc.leader_id if exc.leader_id is not None else -1
            return response
        except ControllerTimeoutError as exc:
            return response_type(error_code=Code.REQUEST_TIMED_OUT, error_message=str(exc))

    @guarded
    async def RegisterBroker(
        self, request: controller_pb2.RegisterBrokerRequest, context: grpc.aio.ServicerContext
    ) -> controller_pb2.RegisterBrokerResponse:
        return await self._local(
            "register_broker", request, controller_pb2.RegisterBrokerResponse, context
        )

    @guarded
    async def BrokerHeartbeat(
        self, request: controller_pb2.BrokerHeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> controller_pb2.BrokerHeartbeatResponse:
        return await self._local(
            "broker_heartbeat", request, controller_pb2.BrokerHeartbeatResponse, context
        )

    @guarded
    async def AlterPartition(
        self, request: controller_pb2.AlterPartitionRequest, context: grpc.aio.ServicerContext
    ) -> controller_pb2.AlterPartitionResponse:
        return await self._local(
            "alter_partition", request, controller_pb2.AlterPartitionResponse, context
        )

    @guarded
    async def AllocateProducerIds(
        self, request: controller_pb2.AllocateProducerIdsRequest, context: grpc.aio.ServicerContext
    ) -> controller_pb2.AllocateProducerIdsResponse:
        return await self._local(
            "allocate_producer_ids", request, controller_pb2.AllocateProducerIdsResponse, context
        )
