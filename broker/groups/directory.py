"""Where groups live: which broker coordinates a group, which groups exist cluster-wide, and
the internal topic that holds them. Shared by the gRPC GroupService and the Kafka listener.

A group's coordinator is the leader of its partition of __consumer_offsets (Kafka's hash of
the group id), so finding it may first create that topic (with the broker's offsets.topic.*
settings, replicas capped by the live brokers). Listing groups asks every other live broker
for the groups it coordinates; brokers that do not answer are named in the reply.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from raftka.broker.config import BrokerConfig
from raftka.broker.controller_client import ChannelPool
from raftka.broker.errors import to_error
from raftka.broker.groups.coordinator import GroupCoordinator
from raftka.broker.groups.offsets_log import OFFSETS_TOPIC, partition_for_group
from raftka.broker.internal_auth import method_path
from raftka.broker.topic_admin import TopicAdmin
from raftka.cluster.image import BrokerRegistration
from raftka.cluster.placement import default_replication_factor
from raftka.proto.raftka.v1 import admin_pb2, common_pb2, group_pb2, group_pb2_grpc

log = logging.getLogger("raftka.groups")
Code = common_pb2.ErrorCode
# Kept small by the coordinator's snapshots, not by retention; segments stay small so the
# log before a snapshot can be dropped soon.
OFFSETS_TOPIC_CONFIGS = {"retention.ms": "-1", "max.message.bytes": "16777216"}
# How long one broker may take to list its groups (s).
LIST_GROUPS_TIMEOUT_S = 5.0
LIST_GROUPS = method_path("GroupService", "ListGroups")


class GroupDirectory:
    def __init__(
        self,
        config: BrokerConfig,
        topics: TopicAdmin,
        coordinator: GroupCoordinator,
        channels: ChannelPool,
    ) -> None:
        self._config = config
        self._topics = topics
        self._coordinator = coordinator
        self._channels = channels
        self._creating = asyncio.Lock()

    async def ensure_offsets_topic(self) -> None:
        if OFFSETS_TOPIC in self._topics.image.topics:
            return
        async with self._creating:
            image = self._topics.image
            if OFFSETS_TOPIC in image.topics:
                return
            config = self._config
            live = len(image.unfenced_broker_ids())
            replication_factor = default_replication_factor(
                config.offsets_topic_replication_factor, image, len(config.voter_map)
            )
            if replication_factor > live:
                # Not yet (start-up, or a broker down): committed offsets on fewer replicas
                # than asked would stay so for ever. FindCoordinator answers
                # COORDINATOR_NOT_AVAILABLE meanwhile, which clients retry (as Kafka does).
                log.debug("%s waits for %d live brokers (%d now)", OFFSETS_TOPIC,
                          replication_factor, live)
                return
            request = admin_pb2.CreateTopicsRequest(
                topics=[
                    admin_pb2.NewTopic(
                        name=OFFSETS_TOPIC,
                        num_partitions=config.offsets_topic_num_partitions,
                        replication_factor=replication_factor,
                        configs={
                            **OFFSETS_TOPIC_CONFIGS,
                            "segment.bytes": str(config.offsets_topic_segment_bytes),
                        },
                    )
                ]
            )
            response = await self._topics.create_topics(request, internal=True)
            result = response.topics[0]
            if result.error_code not in (Code.NONE, Code.TOPIC_ALREADY_EXISTS):
                log.warning("creating %s failed: %s", OFFSETS_TOPIC, result.error_message)

    async def find_coordinator(
        self, group_id: str, listener: str
    ) -> group_pb2.FindCoordinatorResponse:
        """The coordinator of `group_id`, at its address for `listener`."""
        response = group_pb2.FindCoordinatorResponse(partition=-1)
        if not group_id:
            response.error_code = Code.INVALID_GROUP_ID
            response.error_message = "the group id is empty"
            return response
        try:
            await self.ensure_offsets_topic()
        except Exception as exc:
            response.error_code, response.error_message = to_error(exc)  # type: ignore[assignment]
            return response
        image = self._topics.image
        topic = image.topics.get(OFFSETS_TOPIC)
        if topic is None:
            response.error_code = Code.COORDINATOR_NOT_AVAILABLE
            response.error_message = f"{OFFSETS_TOPIC} does not exist yet"
            return response
        index = partition_for_group(group_id, len(topic.partitions))
        broker = image.brokers.get(topic.partitions[index].leader)
        response.partition = index
        if broker is None or broker.fenced:
            response.error_code = Code.COORDINATOR_NOT_AVAILABLE
            response.error_message = f"{OFFSETS_TOPIC}-{index} has no leader right now"
            return response
        host, port = broker.grpc_endpoint(listener)
        response.coordinator.CopyFrom(
            common_pb2.BrokerEndpoint(
                broker_id=broker.broker_id, host=host, port=port, kafka_port=broker.kafka_port
            )
        )
        return response

    def coordinator_of(self, broker_id: int) -> BrokerRegistration | None:
        return self._topics.image.brokers.get(broker_id)

    async def list_groups(self, local_only: bool) -> group_pb2.ListGroupsResponse:
        """The groups this broker coordinates, and unless `local_only` every other live
        broker's too."""
        response = group_pb2.ListGroupsResponse()
        response.groups.extend(self._coordinator.list_local())
        if local_only:
            return response
        others = [
            b
            for b in self._topics.image.brokers.values()
            if not b.fenced and b.broker_id != self._config.broker_id
        ]
        answers = await asyncio.gather(*(self._ask(b) for b in others))
        for broker, answer in zip(others, answers, strict=True):
            if answer is None:
                response.unreachable_brokers.append(broker.broker_id)
            else:
                response.groups.extend(answer.groups)
        return response

    async def _ask(self, broker: BrokerRegistration) -> group_pb2.ListGroupsResponse | None:
        stub = group_pb2_grpc.GroupServiceStub(
            self._channels.get(f"{broker.host}:{broker.port}")
        )
        try:
            return await stub.ListGroups(  # type: ignore[no-any-return]
                group_pb2.ListGroupsRequest(local_only=True), timeout=LIST_GROUPS_TIMEOUT_S,
                # signed: a broker's question, not subject to client ACLs
                metadata=self._channels.auth.metadata(LIST_GROUPS),
            )
        except grpc.aio.AioRpcError:
            return None
