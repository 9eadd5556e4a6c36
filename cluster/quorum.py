"""The active controller: runs the pure handlers of controller.py on the Raft leader.

How it works: every node runs a QuorumController, but only the one whose Raft node leads is
*active*. On becoming leader it first commits a bootstrap batch (a no-op, plus the cluster id
the first time); once that batch is applied, its image holds everything committed before, and
it starts serving. Commands run one at a time under a lock: read the image, run the handler,
propose its records, wait until they are applied, reply. A node that is not active raises
NotControllerError, and callers forward to the leader.

Fencing: a broker proven dead (its port refused a connection, cluster/liveness.py) is fenced
at once, by `fence_proven_dead`; a periodic tick fences brokers whose heartbeats stopped for a
session timeout (silence proves nothing faster). A broker in controlled shutdown is fenced on
its own request and is not unfenced by a heartbeat of the same registration.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from raftka.cluster import controller, records, security_controller, topic_alterations
from raftka.cluster.controller import ControllerResult, ControllerSettings
from raftka.cluster.heartbeats import BrokerHeartbeatTracker
from raftka.cluster.image import MetadataImage
from raftka.cluster.metadata_log import SKIPPED_OFFSET, MetadataLog, ProposeError
from raftka.proto.raftka.v1 import admin_pb2, controller_pb2, security_pb2

log = logging.getLogger("raftka.controller")

R = TypeVar("R")
# quorum_contact_age_ms meaning "no majority known": the broker's lease is not extended.
NO_LEASE_MS = 2**31 - 1
Clock = Callable[[], int]


class NotControllerError(Exception):
    """This node is not the active controller; `leader_id` says who may be (or None)."""

    def __init__(self, leader_id: int | None) -> None:
        super().__init__(f"not the controller (leader: {leader_id})")
        self.leader_id = leader_id


class ControllerTimeoutError(Exception):
    """A metadata write did not commit in time; its outcome is unknown."""


def _with_reply(batch: tuple[records.MetadataRecord, ...]) -> ControllerResult[bool]:
    """A fencing batch as a command whose reply says whether it changed anything."""
    return ControllerResult(batch, bool(batch))


def random_id() -> str:
    return uuid.uuid4().hex[:22]


@dataclass(slots=True)
class AlterPartitionStats:
    """What this node answered as controller (since it started): AlterPartition requests,
    the partitions they named, the metadata batches they committed and the ISR changes in
    those batches. Batching shows as far fewer commits than changes."""

    requests: int = 0
    partitions: int = 0
    commits: int = 0
    changes: int = 0


class QuorumController:
    def __init__(
        self,
        node_id: int,
        metadata_log: MetadataLog,
        settings: ControllerSettings,
        clock_ms: Clock,
        *,
        session_timeout_ms: int,
        write_timeout_s: float = 5.0,
        leader_rebalance_interval_ms: int = 0,
        new_id: Callable[[], str] = random_id,
    ) -> None:
        self.node_id = node_id
        self.log = metadata_log
        self.settings = settings
        self._clock_ms = clock_ms
        self._write_timeout_s = write_timeout_s
        self._new_id = new_id
        self.heartbeats = BrokerHeartbeatTracker(session_timeout_ms)
        self._lock = asyncio.Lock()
        self._active = False
        self._activating: asyncio.Task[None] | None = None
        # 0 disables automatic preferred-leader elections.
        self._rebalance_interval_ms = leader_rebalance_interval_ms
        self._last_rebalance_ms = 0
        # Broker id -> epoch of a registration in controlled shutdown (one entry per broker
        # at most): a late heartbeat of it must not unfence it again.
        self._shutting_down: dict[int, int] = {}
        self.alter_partition_stats = AlterPartitionStats()

    # ------------------------------------------------------------------------ leadership
    @property
    def active(self) -> bool:
        return self._active and self.log.is_leader()

    @property
    def confirmed(self) -> bool:
        """Active and in touch with a majority right now. Renewing a broker's lease or fencing
        brokers for silence needs this: a controller that was itself paused wakes up still
        thinking it leads, with heartbeats it never received and an old image."""
        return self.active and self.log.has_quorum_contact()

    def leader_hint(self) -> int | None:
        return self.log.leader_id()

    async def tick(self) -> None:
        """Called every ~50 ms: follow Raft leadership, fence expired brokers."""
        leader = self.log.is_leader()
        if leader and not self._active and self._activating is None:
            self._activating = asyncio.create_task(self._activate())
        elif not leader and self._active:
            log.info("node %d is no longer the controller", self.node_id)
            self._active = False
        if self.confirmed:
            await self._fence_expired()
            await self._rebalance_if_due()

    async def _activate(self) -> None:
        try:
            async with self._lock:
                if not self.log.is_leader():
                    return
                image = self.log.image
                batch = controller.bootstrap(image, self._new_id)
                # Skipped (and retried on the next tick) if entries committed before this
                # term were not all applied here yet: the image it was built on was behind.
                await self._propose(batch, image.offset)
                self.heartbeats.activate(self._clock_ms())
                # The first preferred-leader election waits one interval too: right after a
                # failover it would move partitions again while clients are still moving.
                self._last_rebalance_ms = self._clock_ms()
                self._active = True
                log.info(
                    "node %d is the controller at metadata offset %d",
                    self.node_id,
                    self.log.image.offset,
                )
        except (ProposeError, ControllerTimeoutError, NotControllerError) as exc:
            log.warning("could not become the active controller: %s", exc)
        finally:
            self._activating = None

    async def _fence_expired(self) -> None:
        image = self.log.image
        now_ms = self._clock_ms()
        candidates = [b.broker_id for b in image.brokers.values() if not b.fenced]
        expired = self.heartbeats.expired(candidates, now_ms)
        if not expired:
            return
        log.warning(
            "fencing broker(s) %s: no heartbeat within %d ms",
            expired,
            self.heartbeats.session_timeout_ms,
        )
        try:
            await self._run(
                lambda img: ControllerResult(
                    controller.fence_brokers(img, expired, self.settings), None
                )
            )
        except (NotControllerError, ControllerTimeoutError) as exc:
            log.warning("fencing %s failed: %s", expired, exc)

    async def fence_proven_dead(self, broker_id: int, broker_epoch: int, proof: str) -> bool:
        """Fence a broker whose process is proven gone (`proof` says how), through the normal
        record path, without waiting for its session to expire; True if this fenced it. Only
        while in touch with the majority, like fencing for silence."""
        if not self.confirmed:
            return False
        try:
            fenced = await self._run(
                lambda img: _with_reply(
                    controller.fence_dead_brokers(img, {broker_id: broker_epoch}, self.settings)
                )
            )
        except (NotControllerError, ControllerTimeoutError) as exc:
            log.warning("fencing dead broker %d failed: %s", broker_id, exc)
            return False
        if fenced:
            log.warning("fenced broker %d (epoch %d) at once: %s", broker_id, broker_epoch, proof)
        return fenced

    async def _rebalance_if_due(self) -> None:
        now_ms = self._clock_ms()
        interval = self._rebalance_interval_ms
        if interval <= 0 or now_ms - self._last_rebalance_ms < interval:
            return
        self._last_rebalance_ms = now_ms
        changes = controller.preferred_leader_elections(self.log.image)
        if not changes:
            return
        log.info("moving %d partition(s) back to their preferred leaders", len(changes))
        try:
            await self._run(
                lambda img: ControllerResult(controller.preferred_leader_elections(img), None)
            )
        except (NotControllerError, ControllerTimeoutError) as exc:
            log.warning("preferred leader election failed: %s", exc)

    # -------------------------------------------------------------------------- commands
    async def _run(self, handler: Callable[[MetadataImage], ControllerResult[R]]) -> R:
        if not self.active:
            raise NotControllerError(self.leader_hint())
        async with self._lock:
            if not self.active:
                raise NotControllerError(self.leader_hint())
            image = self.log.image
            result = handler(image)
            if result.records:
                await self._propose(result.records, image.offset)
            return result.response

    async def _propose(self, batch: tuple[records.MetadataRecord, ...], built_on: int) -> int:
        """Commit `batch`, built on the image at offset `built_on`. Replay skips it if the
        log moved on meanwhile (another controller wrote): then this one was deposed."""
        encoded = records.encode_batch(
            batch, timestamp_ms=self._clock_ms(), controller_id=self.node_id,
            base_offset=built_on + 1,
        )
        try:
            offset = await self.log.propose(encoded, self._write_timeout_s)
        except ProposeError as exc:
            if exc.not_leader:
                self._active = False
                raise NotControllerError(self.leader_hint()) from exc
            raise ControllerTimeoutError(str(exc)) from exc
        if offset == SKIPPED_OFFSET or offset != built_on + len(batch):
            # Replay skipped it: another controller wrote first, or an earlier write of this
            # one whose wait timed out landed first. Either way this image is behind the
            # log: step down (the next tick activates again once caught up, if Raft still
            # says so); the caller retries. (The offset alone could not tell a skipped batch
            # from success after an earlier batch of the same length.)
            self._active = False
            log.warning("a metadata batch built at offset %d was skipped: the log had moved "
                        "on (another controller, or an earlier write that timed out); "
                        "stepping down until caught up", built_on)
            raise NotControllerError(self.leader_hint())
        return offset

    async def create_topics(
        self, request: admin_pb2.CreateTopicsRequest, *, allow_internal: bool = False
    ) -> admin_pb2.CreateTopicsResponse:
        return await self._run(
            lambda image: controller.create_topics(
                image, request, self.settings, self._new_id, allow_internal=allow_internal
            )
        )

    async def delete_topics(
        self, request: admin_pb2.DeleteTopicsRequest
    ) -> admin_pb2.DeleteTopicsResponse:
        return await self._run(lambda image: controller.delete_topics(image, request))

    async def alter_configs(
        self, request: admin_pb2.AlterConfigsRequest
    ) -> admin_pb2.AlterConfigsResponse:
        response = await self._run(
            lambda image: topic_alterations.alter_configs(image, request)
        )
        response.metadata_offset = self.log.image.offset  # the change is applied by now
        return response

    async def create_partitions(
        self, request: admin_pb2.CreatePartitionsRequest
    ) -> admin_pb2.CreatePartitionsResponse:
        response = await self._run(
            lambda image: topic_alterations.create_partitions(image, request, self.settings)
        )
        response.metadata_offset = self.log.image.offset  # the change is applied by now
        return response

    async def register_broker(
        self, request: controller_pb2.RegisterBrokerRequest
    ) -> controller_pb2.RegisterBrokerResponse:
        response = await self._run(
            lambda image: controller.register_broker(image, request, self.settings)
        )
        if response.error_code == 0:
            registered = self.log.image.brokers.get(request.broker_id)
            assert registered is not None and registered.epoch == response.broker_epoch
            self.heartbeats.touch(request.broker_id, self._clock_ms())
        return response

    async def broker_heartbeat(
        self, request: controller_pb2.BrokerHeartbeatRequest
    ) -> controller_pb2.BrokerHeartbeatResponse:
        if not self.confirmed:
            raise NotControllerError(self.leader_hint())
        image = self.log.image
        broker = image.brokers.get(request.broker_id)
        if broker is not None and broker.epoch == request.broker_epoch:
            self.heartbeats.touch(request.broker_id, self._clock_ms())
        if broker is not None and not broker.fenced and broker.epoch == request.broker_epoch:
            response = controller_pb2.BrokerHeartbeatResponse(fenced=False)
        elif self._shutting_down.get(request.broker_id) == request.broker_epoch:
            response = controller_pb2.BrokerHeartbeatResponse(fenced=True)  # stays fenced
        else:
            response = await self._run(
                lambda img: controller.broker_heartbeat(img, request, self.settings)
            )
        age_s = self.log.quorum_contact_age_s()
        response.quorum_contact_age_ms = (
            min(NO_LEASE_MS, int(age_s * 1000) + 1) if math.isfinite(age_s) else NO_LEASE_MS
        )
        return response

    async def controlled_shutdown(
        self, request: controller_pb2.ControlledShutdownRequest
    ) -> controller_pb2.ControlledShutdownResponse:
        """Fence a stopping broker on its request (controller.controlled_shutdown)."""
        # Before the fence is written: a heartbeat that overtakes this request and lands
        # after the fence must find the broker already marked.
        self._shutting_down[request.broker_id] = request.broker_epoch
        response = await self._run(
            lambda image: controller.controlled_shutdown(image, request, self.settings)
        )
        if response.error_code == 0:
            log.info(
                "broker %d is in controlled shutdown: fenced at metadata offset %d "
                "(%d partition(s) left without a leader)",
                request.broker_id, response.metadata_offset, response.partitions_without_leader,
            )
        return response

    async def alter_partition(
        self, request: controller_pb2.AlterPartitionRequest
    ) -> controller_pb2.AlterPartitionResponse:
        changes: list[int] = []

        def handler(image: MetadataImage) -> ControllerResult[
                controller_pb2.AlterPartitionResponse]:
            result = controller.alter_partition(image, request)
            changes.append(len(result.records))
            return result

        response = await self._run(handler)
        stats = self.alter_partition_stats
        stats.requests += 1
        stats.partitions += len(request.partitions) or 1
        if changes and changes[-1]:
            stats.commits += 1
            stats.changes += changes[-1]
            log.info("AlterPartition from broker %d: %d partition(s) asked, %d ISR change(s) "
                     "committed in one metadata batch", request.broker_id,
                     len(request.partitions) or 1, changes[-1])
        return response

    async def allocate_producer_ids(
        self, request: controller_pb2.AllocateProducerIdsRequest
    ) -> controller_pb2.AllocateProducerIdsResponse:
        return await self._run(lambda image: controller.allocate_producer_ids(image, request))

    # ------------------------------------------------------------------ users and ACLs
    async def alter_user_scram_credentials(
        self, request: security_pb2.AlterUserScramCredentialsRequest
    ) -> security_pb2.AlterUserScramCredentialsResponse:
        return await self._run(
            lambda image: security_controller.alter_user_scram_credentials(image, request))

    async def create_acls(
        self, request: security_pb2.CreateAclsRequest
    ) -> security_pb2.CreateAclsResponse:
        return await self._run(
            lambda image: security_controller.create_acls(image, request, self._new_id))

    async def delete_acls(
        self, request: security_pb2.DeleteAclsRequest
    ) -> security_pb2.DeleteAclsResponse:
        return await self._run(lambda image: security_controller.delete_acls(image, request))
