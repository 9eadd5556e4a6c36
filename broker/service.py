"""gRPC servicers: decode, call the broker's core, encode. No business logic lives here.

Per-item problems travel as ErrorCode in the reply (see common.proto); only a failure of the
whole request becomes a gRPC status (INVALID_ARGUMENT for a request that cannot be served at
all, INTERNAL for a bug, with the reason in the status message).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from raftka.broker import metadata_view
from raftka.broker.controller_client import FORWARDED_HEADER, INTERNAL_TOPICS_HEADER
from raftka.broker.core import BrokerCore
from raftka.broker.errors import to_error
from raftka.broker.grpc_guard import guarded
from raftka.broker.grpc_security import GrpcGate
from raftka.broker.internal_auth import (
    ALTER_CONFIGS,
    CREATE_PARTITIONS,
    CREATE_TOPICS,
    DELETE_TOPICS,
    FETCH,
    WATCH_BROKER,
    method_path,
)
from raftka.broker.listeners import DEFAULT_LISTENER
from raftka.cluster.acl import Operation, ResourceType
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

log = logging.getLogger("raftka.broker")
Code = common_pb2.ErrorCode
TOPIC = ResourceType.TOPIC
# Requests of one ProduceStream waiting for their acks at once; the stream's next request
# is read when one of them is answered. The SDK keeps one per partition it sends to this
# broker, so this bounds only clients that pipeline (the memory of their waits).
PRODUCE_STREAM_WAITS_MAX = 1024
# What a ProduceStream's answer queue carries: an answer, the end (None), or a bug.
StreamAnswer = broker_pb2.ProduceResponse | BaseException | None


def _path(method: str) -> str:
    return method_path("BrokerService", method)


def _has_header(context: grpc.aio.ServicerContext, name: str) -> bool:
    return any(key == name for key, _ in (context.invocation_metadata() or ()))


class BrokerServicer(broker_pb2_grpc.BrokerServiceServicer):
    def __init__(self, core: BrokerCore, listener: str = DEFAULT_LISTENER) -> None:
        self._core = core
        self._listener = listener  # whose addresses Metadata answers with
        self._gate = GrpcGate(core, listener)  # who calls, and what they may do
        # The answer queues of the open ProduceStreams, so a stopping broker ends them.
        self._produce_streams: set[asyncio.Queue[StreamAnswer]] = set()
        self._stopping = False

    def end_produce_streams(self) -> None:
        """The broker is stopping: end every ProduceStream after the answers already
        queued (status OK; the producer retries what is left elsewhere, and its sequence
        numbers make a second append of a stored batch a duplicate the leader recognises),
        and refuse new ones. Else each open stream would hold gRPC's shutdown for its whole
        grace period."""
        self._stopping = True
        for answers in self._produce_streams:
            if answers.full():  # a client that stopped reading: its last answer goes
                answers.get_nowait()
            answers.put_nowait(None)

    @guarded
    async def Produce(
        self, request: broker_pb2.ProduceRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.ProduceResponse:
        principal = await self._gate.caller(context, _path("Produce"))
        await self._gate.require(context, principal, Operation.WRITE, TOPIC,
                                 (p.topic for p in request.partitions))
        response = await self._core.produce_path.produce(request)
        self._add_leader_endpoints(response)
        return response

    async def ProduceStream(
        self, requests: AsyncIterator[broker_pb2.ProduceRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[broker_pb2.ProduceResponse]:
        """Produce requests on one stream: appended one after another in the order sent,
        each answered once it has its acks. The caller's credentials are checked for every
        request, as for every unary call (a deleted user or a changed password ends the
        stream UNAUTHENTICATED), and so are the ACLs; an ACL refusal answers that partition
        TOPIC_AUTHORIZATION_FAILED, since ending the stream would fail every request in
        flight on it."""
        if self._stopping:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the broker is stopping")
        answers: asyncio.Queue[StreamAnswer] = asyncio.Queue(PRODUCE_STREAM_WAITS_MAX)
        taking = asyncio.ensure_future(self._take_stream_requests(requests, context, answers))
        self._produce_streams.add(answers)
        try:
            while (answer := await answers.get()) is not None:
                if isinstance(answer, grpc.aio.AbortError):
                    raise answer  # the gate ended the call (credentials): its status stands
                if isinstance(answer, BaseException):  # a bug: end the stream, say why
                    log.error("ProduceStream failed", exc_info=answer)
                    await context.abort(grpc.StatusCode.INTERNAL,
                                        f"{type(answer).__name__}: {answer}")
                    raise answer  # unreachable: abort raises
                yield answer
        finally:
            self._produce_streams.discard(answers)
            taking.cancel()

    async def _take_stream_requests(
        self, requests: AsyncIterator[broker_pb2.ProduceRequest],
        context: grpc.aio.ServicerContext, answers: asyncio.Queue[StreamAnswer],
    ) -> None:
        """Append each request before reading the next (the stream's order is the log's);
        wait for its acks beside the later ones. At most PRODUCE_STREAM_WAITS_MAX wait for
        their acks, and as many answers for their turn in `answers`; then the next request
        is not read, and gRPC's flow control holds the client back. Ends, after the last
        answer, with None, or with the exception that ended it."""
        waits: set[asyncio.Task[None]] = set()
        ending: StreamAnswer = None
        try:
            async for request in requests:
                if len(waits) >= PRODUCE_STREAM_WAITS_MAX:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                started = time.perf_counter()
                principal = await self._gate.caller(context, _path("Produce"))
                request, refused = self._split_writable(context, principal, request)
                waiting = await self._core.produce_path.produce_in_order(request, refused)
                wait = asyncio.ensure_future(self._answer(waiting, started, answers))
                waits.add(wait)
                wait.add_done_callback(waits.discard)
            # The client closed its side: what it sent before is still answered.
            if waits:
                await asyncio.gather(*waits)
        except asyncio.CancelledError:  # the call ended: nobody reads `answers` any more
            for wait in waits:
                wait.cancel()
            raise
        except Exception as exc:
            ending = exc
            for wait in waits:
                wait.cancel()
        await answers.put(ending)

    async def _answer(
        self, waiting: Awaitable[broker_pb2.ProduceResponse], started: float,
        answers: asyncio.Queue[StreamAnswer],
    ) -> None:
        try:
            response = await waiting
            self._add_leader_endpoints(response)
        except Exception as exc:  # the produce path answers errors; this is a bug
            await answers.put(exc)
            return
        self._core.metrics.request_done("Produce", "grpc", time.perf_counter() - started,
                                        "NONE")
        await answers.put(response)  # waits while the client is slow to read

    def _split_writable(
        self, context: grpc.aio.ServicerContext, principal: str,
        request: broker_pb2.ProduceRequest,
    ) -> tuple[broker_pb2.ProduceRequest, list[broker_pb2.PartitionProduceResponse]]:
        """The request without the partitions `principal` may not WRITE, and those
        partitions' TOPIC_AUTHORIZATION_FAILED replies."""
        denied = {topic for topic in {p.topic for p in request.partitions}
                  if not self._gate.allowed(context, principal, Operation.WRITE, TOPIC, topic)}
        if not denied:
            return request, []
        refused = [
            broker_pb2.PartitionProduceResponse(
                topic=item.topic, partition=item.partition, base_offset=-1, leader_id=-1,
                error_code=Code.TOPIC_AUTHORIZATION_FAILED,
                error_message=f"{principal} may not WRITE topic {item.topic!r}")
            for item in request.partitions if item.topic in denied
        ]
        allowed = broker_pb2.ProduceRequest(
            acks=request.acks, timeout_ms=request.timeout_ms,
            correlation_id=request.correlation_id,
            partitions=[item for item in request.partitions if item.topic not in denied])
        return allowed, refused

    @guarded
    async def Fetch(
        self, request: broker_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.FetchResponse:
        if request.replica_id >= 0:  # a follower's fetch moves the HW and the ISR
            await self._core.internal_auth.require(context, FETCH)
        else:
            principal = await self._gate.caller(context, FETCH)
            await self._gate.require(context, principal, Operation.READ, TOPIC,
                                     (p.topic for p in request.partitions))
        response = await self._core.fetch_path.fetch(request)
        self._add_leader_endpoints(response)
        return response

    def _add_leader_endpoints(
        self, response: broker_pb2.ProduceResponse | broker_pb2.FetchResponse
    ) -> None:
        leaders = metadata_view.named_leaders(response.partitions)
        if leaders:
            response.node_endpoints.extend(
                metadata_view.leader_endpoints(self._core.image, leaders, self._listener)
            )

    @guarded
    async def ListOffsets(
        self, request: broker_pb2.ListOffsetsRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.ListOffsetsResponse:
        principal = await self._gate.caller(context, _path("ListOffsets"))
        await self._gate.require(context, principal, Operation.DESCRIBE, TOPIC,
                                 (p.topic for p in request.partitions))
        return self._core.fetch_path.list_offsets(request)

    @guarded
    async def OffsetForLeaderEpoch(
        self,
        request: broker_pb2.OffsetForLeaderEpochRequest,
        context: grpc.aio.ServicerContext,
    ) -> broker_pb2.OffsetForLeaderEpochResponse:
        principal = await self._gate.caller(context, _path("OffsetForLeaderEpoch"))
        await self._gate.require(context, principal, Operation.DESCRIBE, TOPIC,
                                 (p.topic for p in request.partitions))
        return self._core.fetch_path.offset_for_leader_epoch(request)

    @guarded
    async def InitProducerId(
        self, request: broker_pb2.InitProducerIdRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.InitProducerIdResponse:
        principal = await self._gate.caller(context, _path("InitProducerId"))
        await self._gate.require_cluster(context, principal, Operation.IDEMPOTENT_WRITE)
        try:
            producer_id = await self._core.producer_ids.next_id()
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
        core = self._core
        principal = await self._gate.caller(context, _path("Metadata"))
        if request.allow_auto_topic_creation:
            missing = [t for t in request.topics if t not in core.image.topics]
            creatable = [t for t in missing if self._gate.allowed(
                context, principal, Operation.CREATE, ResourceType.CLUSTER, "kafka-cluster")
                or self._gate.allowed(context, principal, Operation.CREATE, TOPIC, t)]
            await core.topics.auto_create_missing(creatable)  # errors: per topic below
        response = metadata_view.metadata_response(
            core.metadata_image, list(request.topics), core.controller_id(), self._listener,
            core.not_leading, catching_up=not core.caught_up,
        )
        self._gate.drop_hidden_topics(context, principal, response.topics,
                                      named=bool(request.topics))
        return response


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, core: BrokerCore, listener: str = DEFAULT_LISTENER) -> None:
        self._core = core
        self._listener = listener
        self._gate = GrpcGate(core, listener)

    async def _create_allowed(self, context: grpc.aio.ServicerContext,
                              names: list[str]) -> None:
        """Kafka's rule: CREATE on the cluster, or on each topic."""
        principal = await self._gate.caller(context, CREATE_TOPICS)
        if not self._gate.allowed(context, principal, Operation.CREATE, ResourceType.CLUSTER,
                                  "kafka-cluster"):
            await self._gate.require(context, principal, Operation.CREATE, TOPIC, names)

    async def _forwarded(self, context: grpc.aio.ServicerContext, method: str) -> bool:
        """Whether another broker forwarded this call to us as the controller; only brokers
        may, so a forwarded call without the cluster's credentials is refused here."""
        if not _has_header(context, FORWARDED_HEADER):
            return False
        await self._core.internal_auth.require(context, method)
        return True

    @guarded
    async def CreateTopics(
        self, request: admin_pb2.CreateTopicsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreateTopicsResponse:
        forwarded = await self._forwarded(context, CREATE_TOPICS)
        if not forwarded:
            await self._create_allowed(context, [t.name for t in request.topics])
        return await self._core.topics.create_topics(
            request,
            forwarded=forwarded,
            internal=forwarded and _has_header(context, INTERNAL_TOPICS_HEADER),
        )

    @guarded
    async def DeleteTopics(
        self, request: admin_pb2.DeleteTopicsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DeleteTopicsResponse:
        forwarded = await self._forwarded(context, DELETE_TOPICS)
        if not forwarded:
            principal = await self._gate.caller(context, DELETE_TOPICS)
            await self._gate.require(context, principal, Operation.DELETE, TOPIC, request.names)
        return await self._core.topics.delete_topics(request, forwarded=forwarded)

    @guarded
    async def AlterConfigs(
        self, request: admin_pb2.AlterConfigsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.AlterConfigsResponse:
        forwarded = await self._forwarded(context, ALTER_CONFIGS)
        if not forwarded:  # a forwarded call was checked by the broker that forwarded it
            principal = await self._gate.caller(context, ALTER_CONFIGS)
            await self._gate.require(context, principal, Operation.ALTER_CONFIGS, TOPIC,
                                     (t.topic for t in request.topics))
        return await self._core.topics.alter_configs(request, forwarded=forwarded)

    @guarded
    async def CreatePartitions(
        self, request: admin_pb2.CreatePartitionsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreatePartitionsResponse:
        forwarded = await self._forwarded(context, CREATE_PARTITIONS)
        if not forwarded:
            principal = await self._gate.caller(context, CREATE_PARTITIONS)
            await self._gate.require(context, principal, Operation.ALTER, TOPIC,
                                     (t.topic for t in request.topics))
        return await self._core.topics.create_partitions(request, forwarded=forwarded)

    @guarded
    async def DeleteRecords(
        self, request: admin_pb2.DeleteRecordsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DeleteRecordsResponse:
        principal = await self._gate.caller(context, method_path("AdminService",
                                                                 "DeleteRecords"))
        await self._gate.require(context, principal, Operation.DELETE, TOPIC,
                                 (p.topic for p in request.partitions))
        return await self._core.log_admin.delete_records(request)

    @guarded
    async def DescribeLogDirs(
        self, request: admin_pb2.DescribeLogDirsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DescribeLogDirsResponse:
        principal = await self._gate.caller(context, method_path("AdminService",
                                                                 "DescribeLogDirs"))
        await self._gate.require_cluster(context, principal, Operation.DESCRIBE)
        return self._core.log_admin.describe_log_dirs()

    @guarded
    async def ListTopics(
        self, request: admin_pb2.ListTopicsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListTopicsResponse:
        principal = await self._gate.caller(context, method_path("AdminService", "ListTopics"))
        response = metadata_view.list_topics(self._core.image, request.include_internal)
        self._gate.drop_hidden_topics(context, principal, response.topics)
        return response

    @guarded
    async def DescribeTopics(
        self, request: admin_pb2.DescribeTopicsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DescribeTopicsResponse:
        core = self._core
        principal = await self._gate.caller(context, method_path("AdminService",
                                                                 "DescribeTopics"))
        await self._gate.require(context, principal, Operation.DESCRIBE, TOPIC, request.names)
        return metadata_view.describe_topics(
            core.image,
            list(request.names),
            core.config.topic_config_defaults(),
            core.local_offsets,
        )

    @guarded
    async def DescribeCluster(
        self, request: admin_pb2.DescribeClusterRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DescribeClusterResponse:
        core = self._core
        await self._gate.caller(context, method_path("AdminService", "DescribeCluster"))
        return metadata_view.describe_cluster(
            core.raft_image(), core.controller_id(), self._listener
        )


class ControllerServicer(controller_pb2_grpc.ControllerServiceServicer):
    """Broker-to-controller calls; answered only by the active controller."""

    def __init__(self, core: BrokerCore) -> None:
        self._core = core

    async def _local(
        self,
        rpc: str,
        call: Callable[[Any], Awaitable[Any]],
        request: Any,
        response_type: Callable[..., Any],
        context: grpc.aio.ServicerContext,
    ) -> Any:
        # Every controller call needs the cluster's credentials: without them anyone could
        # re-register a broker id (fencing it) or change an ISR.
        await self._core.internal_auth.require(context, method_path("ControllerService", rpc))
        try:
            return await call(request)
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
            "RegisterBroker",
            self._core.quorum.register_broker,
            request,
            controller_pb2.RegisterBrokerResponse,
            context,
        )

    @guarded
    async def BrokerHeartbeat(
        self, request: controller_pb2.BrokerHeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> controller_pb2.BrokerHeartbeatResponse:
        return await self._local(
            "BrokerHeartbeat",
            self._core.quorum.broker_heartbeat,
            request,
            controller_pb2.BrokerHeartbeatResponse,
            context,
        )

    @guarded
    async def AlterPartition(
        self, request: controller_pb2.AlterPartitionRequest, context: grpc.aio.ServicerContext
    ) -> controller_pb2.AlterPartitionResponse:
        return await self._local(
            "AlterPartition",
            self._core.quorum.alter_partition,
            request,
            controller_pb2.AlterPartitionResponse,
            context,
        )

    @guarded
    async def AllocateProducerIds(
        self, request: controller_pb2.AllocateProducerIdsRequest, context: grpc.aio.ServicerContext
    ) -> controller_pb2.AllocateProducerIdsResponse:
        return await self._local(
            "AllocateProducerIds",
            self._core.quorum.allocate_producer_ids,
            request,
            controller_pb2.AllocateProducerIdsResponse,
            context,
        )

    @guarded
    async def ControlledShutdown(
        self, request: controller_pb2.ControlledShutdownRequest, context: grpc.aio.ServicerContext
    ) -> controller_pb2.ControlledShutdownResponse:
        return await self._local(
            "ControlledShutdown",
            self._core.quorum.controlled_shutdown,
            request,
            controller_pb2.ControlledShutdownResponse,
            context,
        )

    async def WatchBroker(
        self, request: controller_pb2.WatchBrokerRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[controller_pb2.WatchBrokerEvent]:
        """Served by every broker (not only the controller): see broker/liveness.py."""
        await self._core.internal_auth.require(context, WATCH_BROKER)
        watched = self._core.watch_server
        if watched.full:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many watchers")
        async for event in watched.watch(request):
            yield event
