"""The broker's side of the controller: find it, forward to it, register and heartbeat.

How it works: the controller is whichever voter leads the Raft group. Its broker id comes from
the Raft leader's address (voters are configured by id), its gRPC endpoint from its broker
registration in the metadata image. A call runs in-process when this broker is the active
controller, and over gRPC otherwise (marked as forwarded, so it is never forwarded twice);
NOT_CONTROLLER or an unreachable controller means: wait a moment, look again, retry, until the
deadline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from raftka.broker.internal_auth import (
    ALLOCATE_PRODUCER_IDS,
    ALTER_CONFIGS,
    ALTER_PARTITION,
    BROKER_HEARTBEAT,
    CONTROLLED_SHUTDOWN,
    CREATE_PARTITIONS,
    CREATE_TOPICS,
    DELETE_TOPICS,
    REGISTER_BROKER,
    InternalAuth,
)
from raftka.broker.listeners import ListenerEndpoint
from raftka.broker.tls import aio_channel
from raftka.cluster.metadata_log import MetadataLog
from raftka.cluster.quorum import ControllerTimeoutError, NotControllerError, QuorumController
from raftka.proto.raftka.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
)

log = logging.getLogger("raftka.broker")

Code = common_pb2.ErrorCode
FORWARDED_HEADER = "x-raftka-forwarded"
# Set (with FORWARDED_HEADER) only by a broker creating an internal topic (__consumer_offsets).
INTERNAL_TOPICS_HEADER = "x-raftka-internal-topics"
RETRY_BACKOFF_S = 0.05
GRPC_MESSAGE_MAX_BYTES = 128 * 1024 * 1024
# An unregistered broker that has found no controller this long says what to check (s).
UNREGISTERED_HINT_S = 10.0


class ChannelPool:
    """One grpc.aio channel per target, shared by every caller on this event loop, and the
    credentials (`auth`) that this broker's internal calls on them carry."""

    def __init__(self, auth: InternalAuth | None = None,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.auth = auth if auth is not None else InternalAuth(None, -1)
        self._credentials = credentials  # TLS to the other brokers (broker/tls.py); None: none

    def get(self, target: str) -> grpc.aio.Channel:
        channel = self._channels.get(target)
        if channel is None:
            channel = aio_channel(
                target,
                self._credentials,
                [
                    ("grpc.max_receive_message_length", GRPC_MESSAGE_MAX_BYTES),
                    ("grpc.max_send_message_length", GRPC_MESSAGE_MAX_BYTES),
                ],
            )
            self._channels[target] = channel
        return channel

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


def _is_not_controller(response: Any) -> bool:
    if hasattr(response, "topics"):
        return any(t.error_code == Code.NOT_CONTROLLER for t in response.topics)
    return getattr(response, "error_code", 0) == Code.NOT_CONTROLLER


class ControllerClient:
    def __init__(
        self,
        broker_id: int,
        metadata_log: MetadataLog,
        quorum: QuorumController,
        channels: ChannelPool,
    ) -> None:
        self.broker_id = broker_id
        self._log = metadata_log
        self._quorum = quorum
        self._channels = channels

    def controller_id(self) -> int | None:
        return self._log.leader_id()

    async def call(
        self,
        name: str,
        local: Callable[[Any], Awaitable[Any]],
        remote: Callable[[grpc.aio.Channel], Callable[..., Awaitable[Any]]],
        path: str,
        request: Any,
        timeout_s: float,
    ) -> Any:
        """Any controller call (e.g. users and ACLs, broker/security.py), with the same
        forwarding and retries as the typed methods below."""
        return await self._call(name, local, remote, path, request, timeout_s)

    def _controller_target(self, controller_id: int) -> str | None:
        registration = self._log.image.brokers.get(controller_id)
        if registration is None:
            return None
        return f"{registration.host}:{registration.port}"

    # One typed method per controller call; each runs on the active controller, wherever
    # it is: in-process here, or over gRPC (signed, marked forwarded) on the broker leading
    # the Raft group.
    async def create_topics(
        self, request: admin_pb2.CreateTopicsRequest, timeout_s: float
    ) -> admin_pb2.CreateTopicsResponse:
        return await self._call(
            "create_topics", self._quorum.create_topics,
            lambda channel: admin_pb2_grpc.AdminServiceStub(channel).CreateTopics,
            CREATE_TOPICS, request, timeout_s,
        )

    async def create_internal_topics(
        self, request: admin_pb2.CreateTopicsRequest, timeout_s: float
    ) -> admin_pb2.CreateTopicsResponse:
        """CreateTopics that may name internal topics (__consumer_offsets): brokers only."""

        async def local(request: admin_pb2.CreateTopicsRequest) -> Any:
            return await self._quorum.create_topics(request, allow_internal=True)

        return await self._call(
            "create_internal_topics", local,
            lambda channel: admin_pb2_grpc.AdminServiceStub(channel).CreateTopics,
            CREATE_TOPICS, request, timeout_s, ((INTERNAL_TOPICS_HEADER, "1"),),
        )

    async def delete_topics(
        self, request: admin_pb2.DeleteTopicsRequest, timeout_s: float
    ) -> admin_pb2.DeleteTopicsResponse:
        return await self._call(
            "delete_topics", self._quorum.delete_topics,
            lambda channel: admin_pb2_grpc.AdminServiceStub(channel).DeleteTopics,
            DELETE_TOPICS, request, timeout_s,
        )

    async def alter_configs(
        self, request: admin_pb2.AlterConfigsRequest, timeout_s: float
    ) -> admin_pb2.AlterConfigsResponse:
        return await self._call(
            "alter_configs", self._quorum.alter_configs,
            lambda channel: admin_pb2_grpc.AdminServiceStub(channel).AlterConfigs,
            ALTER_CONFIGS, request, timeout_s,
        )

    async def create_partitions(
        self, request: admin_pb2.CreatePartitionsRequest, timeout_s: float
    ) -> admin_pb2.CreatePartitionsResponse:
        return await self._call(
            "create_partitions", self._quorum.create_partitions,
            lambda channel: admin_pb2_grpc.AdminServiceStub(channel).CreatePartitions,
            CREATE_PARTITIONS, request, timeout_s,
        )

    async def register_broker(
        self, request: controller_pb2.RegisterBrokerRequest, timeout_s: float
    ) -> controller_pb2.RegisterBrokerResponse:
        return await self._call(
            "register_broker", self._quorum.register_broker,
            lambda channel: controller_pb2_grpc.ControllerServiceStub(channel).RegisterBroker,
            REGISTER_BROKER, request, timeout_s,
        )

    async def broker_heartbeat(
        self, request: controller_pb2.BrokerHeartbeatRequest, timeout_s: float
    ) -> controller_pb2.BrokerHeartbeatResponse:
        return await self._call(
            "broker_heartbeat", self._quorum.broker_heartbeat,
            lambda channel: controller_pb2_grpc.ControllerServiceStub(channel).BrokerHeartbeat,
            BROKER_HEARTBEAT, request, timeout_s,
        )

    async def alter_partition(
        self, request: controller_pb2.AlterPartitionRequest, timeout_s: float
    ) -> controller_pb2.AlterPartitionResponse:
        return await self._call(
            "alter_partition", self._quorum.alter_partition,
            lambda channel: controller_pb2_grpc.ControllerServiceStub(channel).AlterPartition,
            ALTER_PARTITION, request, timeout_s,
        )

    async def allocate_producer_ids(
        self, request: controller_pb2.AllocateProducerIdsRequest, timeout_s: float
    ) -> controller_pb2.AllocateProducerIdsResponse:
        return await self._call(
            "allocate_producer_ids", self._quorum.allocate_producer_ids,
            lambda channel: (
                controller_pb2_grpc.ControllerServiceStub(channel).AllocateProducerIds
            ),
            ALLOCATE_PRODUCER_IDS, request, timeout_s,
        )

    async def controlled_shutdown(
        self, request: controller_pb2.ControlledShutdownRequest, timeout_s: float
    ) -> controller_pb2.ControlledShutdownResponse:
        return await self._call(
            "controlled_shutdown", self._quorum.controlled_shutdown,
            lambda channel: controller_pb2_grpc.ControllerServiceStub(channel).ControlledShutdown,
            CONTROLLED_SHUTDOWN, request, timeout_s,
        )

    async def _call(
        self,
        name: str,
        local: Callable[[Any], Awaitable[Any]],
        remote: Callable[[grpc.aio.Channel], Callable[..., Awaitable[Any]]],
        path: str,
        request: Any,
        timeout_s: float,
        extra_metadata: tuple[tuple[str, str], ...] = (),
    ) -> Any:
        """NOT_CONTROLLER or an unreachable controller: wait a moment, look again, retry,
        until the deadline; then ControllerTimeoutError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last_problem = "no controller elected yet"
        while loop.time() < deadline:
            controller_id = self.controller_id()
            try:
                if controller_id == self.broker_id:
                    # Bounded like a remote call: on a loaded controller the call may queue
                    # behind its lock for as long as it likes, and a caller that never hears
                    # back never proposes again (a leader's ISR change stayed pending for
                    # minutes). The outcome of a call cut short is unknown, as over gRPC.
                    try:
                        response = await asyncio.wait_for(
                            local(request), max(0.1, deadline - loop.time())
                        )
                    except TimeoutError:
                        last_problem = "the controller (this broker) did not answer in time"
                        break
                elif controller_id is not None:
                    target = self._controller_target(controller_id)
                    if target is None:
                        last_problem = f"controller {controller_id} has not registered yet"
                        await asyncio.sleep(RETRY_BACKOFF_S)
                        continue
                    channel = self._channels.get(target)
                    metadata = self._channels.auth.metadata(
                        path, ((FORWARDED_HEADER, str(self.broker_id)), *extra_metadata)
                    )
                    response = await remote(channel)(
                        request, timeout=max(0.1, deadline - loop.time()), metadata=metadata
                    )
                else:
                    await asyncio.sleep(RETRY_BACKOFF_S)
                    continue
            except NotControllerError:
                last_problem = f"broker {controller_id} stopped being the controller"
            except grpc.aio.AioRpcError as exc:
                last_problem = f"controller {controller_id} unreachable: {exc.code().name}"
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                    last_problem = (f"controller {controller_id} refused our credentials "
                                    f"(same cluster secret?): {exc.details()}")
            else:
                if not _is_not_controller(response):
                    return response
                last_problem = f"broker {controller_id} is not the controller yet"
            await asyncio.sleep(RETRY_BACKOFF_S)
        raise ControllerTimeoutError(f"controller call {name} timed out: {last_problem}")


class BrokerLifecycle:
    """Registration and the heartbeat loop; reports when the broker is first unfenced.

    It also keeps the broker's *lease*: writes are allowed only until one session timeout after
    the last heartbeat the controller accepted (counted from when it was sent). A leader cut off
    from the controller, or paused, therefore stops accepting writes by itself at about the time
    the controller fences it and elects someone else. Only silence is timed this way: the
    controller fences a broker sooner only when its process is provably gone (its port refused
    a connection, broker/liveness.py) or when it asked to be (controlled shutdown, after which
    it leads nothing) — neither leaves a live leader writing next to its successor.
    """

    def __init__(
        self,
        client: ControllerClient,
        request: controller_pb2.RegisterBrokerRequest,
        applied_offset: Callable[[], int],
        interval_s: float,
        session_timeout_s: float,
        on_unfenced: Callable[[], Awaitable[None]],
        on_registered: Callable[[int], None] = lambda _offset: None,
    ) -> None:
        self._client = client
        self._on_registered = on_registered
        self._request = request
        self._applied_offset = applied_offset
        self._interval_s = interval_s
        self._session_timeout_s = session_timeout_s
        self._on_unfenced = on_unfenced
        self.broker_epoch = -1
        self.fenced = True
        self._announced = False
        self._lease_until = 0.0
        self._started = time.monotonic()
        self._hinted = False

    def lease_problem(self) -> str | None:
        """Why this broker must not accept writes now, or None."""
        if self.fenced:
            return f"broker {self._request.broker_id} is fenced by the controller"
        if time.monotonic() > self._lease_until:
            return (
                f"broker {self._request.broker_id} has not reached the controller for over "
                f"{self._session_timeout_s:.1f}s; refusing writes"
            )
        return None

    @staticmethod
    def registration(
        broker_id: int, incarnation_id: str, host: str, port: int, voter: bool,
        kafka_endpoints: Sequence[ListenerEndpoint] = (),
        grpc_endpoints: Sequence[ListenerEndpoint] = (),
        max_replicas: int = 0,
        replication_port: int = 0,
    ) -> controller_pb2.RegisterBrokerRequest:
        return controller_pb2.RegisterBrokerRequest(
            broker_id=broker_id,
            incarnation_id=incarnation_id,
            voter=voter,
            pid=os.getpid(),
            max_replicas=max_replicas,
            endpoint=common_pb2.BrokerEndpoint(
                broker_id=broker_id, host=host, port=port,
                kafka_port=kafka_endpoints[0].port if kafka_endpoints else 0,
                kafka_listeners=[common_pb2.NamedEndpoint(name=e.name, host=e.host, port=e.port)
                                 for e in kafka_endpoints],
                grpc_listeners=[common_pb2.NamedEndpoint(name=e.name, host=e.host, port=e.port)
                                for e in grpc_endpoints],
                replication_port=replication_port,
            ),
        )

    def advertise_replication_port(self, port: int) -> None:
        """The replication listener's port to register (0: none); before the first
        registration."""
        self._request.endpoint.replication_port = port

    async def run(self) -> None:
        while True:
            try:
                if self.broker_epoch < 0:
                    await self._register()
                await self._heartbeat()
            except ControllerTimeoutError as exc:
                log.warning("%s", exc)
                self._hint_if_alone(str(exc))
            except Exception:
                log.exception("heartbeat loop error")
            await asyncio.sleep(self._interval_s)

    def _hint_if_alone(self, problem: str) -> None:
        """A broker whose cluster secret differs from the others' never hears of a
        controller (its Raft frames are dropped); only the others' logs say why. Say once
        what to check."""
        alone_s = time.monotonic() - self._started
        if (self.broker_epoch < 0 and not self._hinted and alone_s > UNREGISTERED_HINT_S
                and "no controller elected yet" in problem):
            self._hinted = True
            log.warning(
                "broker %d has found no controller for %.0f s: if the other voters are running, "
                "check that this broker's cluster secret and --voters match theirs (their logs "
                "say 'rejected a Raft frame' when the secret differs)",
                self._request.broker_id, alone_s,
            )

    async def _register(self) -> None:
        response = await self._client.register_broker(self._request, 5.0)
        if response.error_code:
            log.error("registration refused: %s", response.error_message)
            return
        self.broker_epoch = response.broker_epoch
        log.info("registered broker %d with epoch %d", self._request.broker_id, self.broker_epoch)
        self._on_registered(self.broker_epoch)  # the epoch is its registration's offset

    async def _heartbeat(self) -> None:
        if self.broker_epoch < 0:
            return
        request = controller_pb2.BrokerHeartbeatRequest(
            broker_id=self._request.broker_id,
            broker_epoch=self.broker_epoch,
            metadata_offset=self._applied_offset(),
        )
        sent_at = time.monotonic()
        response = await self._client.broker_heartbeat(request, max(1.0, self._interval_s * 2))
        if response.error_code == Code.STALE_BROKER_EPOCH:
            log.warning("controller says: %s", response.error_message)
            self.broker_epoch = -1
            self.fenced = True
            return
        was_fenced, self.fenced = self.fenced, response.fenced
        if not response.fenced and not response.error_code:
            # From when the controller last heard a majority, not from when we asked: a
            # controller cut off from it answers for a while after the others moved on.
            granted_at = sent_at - response.quorum_contact_age_ms / 1000
            self._lease_until = max(self._lease_until, granted_at + self._session_timeout_s)
        if was_fenced and not self.fenced:
            log.info("broker %d is unfenced", self._request.broker_id)
            if not self._announced:
                self._announced = True
                await self._on_unfenced()


__all__ = ["BrokerLifecycle", "ChannelPool", "ControllerClient", "admin_pb2"]
