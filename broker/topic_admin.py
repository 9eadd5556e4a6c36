"""Creating and deleting topics for every adapter: gRPC AdminService, the Kafka listener, the
produce path's auto-create and the group directory's __consumer_offsets.

Why one place: a CreateTopics must reach the active controller (in-process or forwarded),
turn "no controller" into per-topic errors, and then wait until this broker has applied the
result, so that a Metadata call right after it sees the topic. That was written once per
adapter before; now each adapter only translates its wire format.

Forwarded calls (x-raftka-forwarded, checked for cluster credentials by the adapter) are
answered here by the local controller and never forwarded again; only brokers' own
internal-topic creations (x-raftka-internal-topics) may name internal topics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from raftka.broker.config import BrokerConfig
from raftka.broker.controller_client import ControllerClient
from raftka.broker.errors import BrokerError
from raftka.broker.replica_manager import ReplicaManager
from raftka.cluster.image import MetadataImage
from raftka.cluster.naming import validate_topic_name
from raftka.cluster.quorum import ControllerTimeoutError, NotControllerError, QuorumController
from raftka.proto.raftka.v1 import admin_pb2, common_pb2

log = logging.getLogger("raftka.broker")
Code = common_pb2.ErrorCode
# How long a create/delete waits for this broker to apply the controller's change (s).
LOCAL_METADATA_WAIT_S = 5.0


class TopicAdmin:
    def __init__(
        self,
        config: BrokerConfig,
        controller: ControllerClient,
        quorum: QuorumController,
        replicas: ReplicaManager,
    ) -> None:
        self._config = config
        self._controller = controller
        self._quorum = quorum
        self._replicas = replicas
        self._timeout_s = config.metadata_write_timeout_ms / 1000

    @property
    def image(self) -> MetadataImage:
        """The metadata this broker has applied (what it serves from)."""
        return self._replicas.image

    async def create_topics(
        self,
        request: admin_pb2.CreateTopicsRequest,
        *,
        forwarded: bool = False,
        internal: bool = False,
        timeout_s: float | None = None,
    ) -> admin_pb2.CreateTopicsResponse:
        """`forwarded`: another broker sent this to us as the controller. `internal`: a
        broker creating an internal topic (only trusted when forwarded or local)."""
        try:
            if forwarded:
                response = await self._quorum.create_topics(request, allow_internal=internal)
            elif internal:
                response = await self._controller.create_internal_topics(
                    request, timeout_s or self._timeout_s
                )
            else:
                response = await self._controller.create_topics(
                    request, timeout_s or self._timeout_s
                )
        except (NotControllerError, ControllerTimeoutError) as exc:
            response = admin_pb2.CreateTopicsResponse()
            for topic in request.topics:
                response.topics.add(name=topic.name, error_code=_code(exc),
                                    error_message=str(exc))
            return response
        await self.wait_for_local_metadata(response)
        return response

    async def delete_topics(
        self,
        request: admin_pb2.DeleteTopicsRequest,
        *,
        forwarded: bool = False,
        timeout_s: float | None = None,
    ) -> admin_pb2.DeleteTopicsResponse:
        try:
            if forwarded:
                response = await self._quorum.delete_topics(request)
            else:
                response = await self._controller.delete_topics(
                    request, timeout_s or self._timeout_s
                )
        except (NotControllerError, ControllerTimeoutError) as exc:
            response = admin_pb2.DeleteTopicsResponse()
            for name in request.names:
                response.topics.add(name=name, error_code=_code(exc), error_message=str(exc))
            return response
        await self.wait_for_local_metadata(response)
        return response

    async def alter_configs(
        self, request: admin_pb2.AlterConfigsRequest, *, forwarded: bool = False,
        timeout_s: float | None = None,
    ) -> admin_pb2.AlterConfigsResponse:
        """Topic config changes (cluster/topic_alterations.py), on the controller."""
        try:
            if forwarded:
                response = await self._quorum.alter_configs(request)
            else:
                response = await self._controller.alter_configs(
                    request, timeout_s or self._timeout_s)
        except (NotControllerError, ControllerTimeoutError) as exc:
            response = admin_pb2.AlterConfigsResponse()
            for alteration in request.topics:
                response.topics.add(topic=alteration.topic, error_code=_code(exc),
                                    error_message=str(exc))
            return response
        await self._wait_for_offset(response.metadata_offset)
        return response

    async def create_partitions(
        self, request: admin_pb2.CreatePartitionsRequest, *, forwarded: bool = False,
        timeout_s: float | None = None,
    ) -> admin_pb2.CreatePartitionsResponse:
        """Partition count increases (cluster/topic_alterations.py), on the controller."""
        try:
            if forwarded:
                response = await self._quorum.create_partitions(request)
            else:
                response = await self._controller.create_partitions(
                    request, timeout_s or self._timeout_s)
        except (NotControllerError, ControllerTimeoutError) as exc:
            response = admin_pb2.CreatePartitionsResponse()
            for change in request.topics:
                response.topics.add(topic=change.topic, error_code=_code(exc),
                                    error_message=str(exc))
            return response
        await self._wait_for_offset(response.metadata_offset)
        return response

    async def _wait_for_offset(self, metadata_offset: int) -> None:
        """Wait (briefly) until this broker has applied the metadata up to `metadata_offset`,
        so a Metadata or DescribeConfigs call right after the change sees it."""
        if metadata_offset > 0:
            await self._replicas.wait_for_metadata(
                lambda image: image.offset >= metadata_offset, LOCAL_METADATA_WAIT_S)

    async def auto_create(self, topic: str) -> None:
        """Create `topic` with the broker defaults (auto.create.topics.enable) and wait until
        this broker's metadata has it; BrokerError if the controller refused."""
        request = admin_pb2.CreateTopicsRequest(topics=[admin_pb2.NewTopic(name=topic)])
        response = await self.create_topics(request)
        result = response.topics[0]
        if result.error_code not in (Code.NONE, Code.TOPIC_ALREADY_EXISTS):
            error = BrokerError(result.error_message)
            error.code = result.error_code
            raise error
        if result.error_code == Code.NONE:
            log.info("auto-created topic %s", topic)

    async def auto_create_missing(self, names: Iterable[str]) -> None:
        """For Metadata requests that allow auto-creation: create each missing, validly
        named topic; failures are reported per topic by the Metadata answer itself."""
        if not self._config.auto_create_topics_enable:
            return
        if not self._replicas.caught_up:
            return  # its image is not current: a topic missing from it may well exist
        for name in names:
            if name in self.image.topics:
                continue
            try:
                validate_topic_name(name)
                await self.auto_create(name)
            except Exception as exc:
                log.info("auto-creating %s failed: %s", name, exc)

    async def wait_for_local_metadata(
        self, response: admin_pb2.CreateTopicsResponse | admin_pb2.DeleteTopicsResponse
    ) -> None:
        """After a controller change, wait (briefly) until this broker has applied it."""
        names = [t.name for t in response.topics if t.error_code == Code.NONE]
        if not names:
            return
        deleting = isinstance(response, admin_pb2.DeleteTopicsResponse)

        def applied(image: MetadataImage) -> bool:
            if deleting:
                return all(name not in image.topics for name in names)
            return all(name in image.topics for name in names)

        await self._replicas.wait_for_metadata(applied, LOCAL_METADATA_WAIT_S)


def _code(exc: Exception) -> int:
    return Code.NOT_CONTROLLER if isinstance(exc, NotControllerError) else Code.REQUEST_TIMED_OUT
