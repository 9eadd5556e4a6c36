"""Controlled shutdown (Kafka's KIP-841): a broker told to stop hands over before it goes.

How it works, in order, all within one deadline (controlled_shutdown_timeout_ms):
1. The server has stopped the heartbeat loop, so nothing unfences this registration again.
2. ControlledShutdown to the controller, which fences this broker: in one metadata batch each
   partition it leads moves to another in-sync replica and it leaves every ISR it is not the
   last member of (cluster/controller.py controlled_shutdown).
3. Wait until this broker has applied that batch, and until each new leader says (in its own
   Metadata answer) that it leads what it took over. From then on this broker answers
   NOT_LEADER for the partitions it gave away while it still answers at all, and a client it
   sends away finds the new leader already leading — not a closed socket, not a second
   NOT_LEADER — and no high watermark waits for this broker's fetches.
4. If this broker's Raft node leads the metadata quorum, hand that over too (Raft's
   TimeoutNow) and wait until another voter leads, so the cluster keeps a controller.
5. Keep answering a moment longer (HANDED_OVER_LINGER_S): clients that were about to send
   here get NOT_LEADER with the new leader's address and go straight there, instead of
   meeting a closed connection and looking for metadata elsewhere first.
Then the server closes its listeners as before. Running out of time (no controller, say)
costs only the hand-over: the broker stops anyway and the others find it gone, by proof of
death or by the session timeout. Skipped when there is nothing to hand over to: this broker
never registered, is fenced already, or is the only unfenced broker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import grpc

from raftka.broker.controller_client import ChannelPool, ControllerClient
from raftka.broker.internal_auth import method_path
from raftka.cluster.image import NO_LEADER, MetadataImage
from raftka.cluster.quorum import ControllerTimeoutError
from raftka.proto.raftka.v1 import broker_pb2, broker_pb2_grpc, controller_pb2

METADATA = method_path("BrokerService", "Metadata")

log = logging.getLogger("raftka.broker")
# How often the hand-over of Raft leadership is asked again (pysyncobj refuses while no voter
# is fully caught up, e.g. right after the fencing batch) and its effect looked for.
RAFT_TRANSFER_RETRY_S = 0.05
RAFT_TRANSFER_POLL_S = 0.01
# How often a new leader is asked whether it leads yet, and how long one answer may take.
TAKEOVER_POLL_S = 0.01
TAKEOVER_ASK_TIMEOUT_S = 0.5
TopicPartitionKey = tuple[str, int]
# After the hand-over, this broker keeps its listeners open this long (within the deadline).
HANDED_OVER_LINGER_S = 0.2


class _RaftNode(Protocol):
    @property
    def image(self) -> MetadataImage: ...

    def is_leader(self) -> bool: ...

    def transfer_leadership(self) -> None: ...


class _AppliedMetadata(Protocol):
    async def wait_for_metadata(
        self, condition: Callable[[MetadataImage], bool], timeout_s: float
    ) -> bool: ...


class _Peers(Protocol):
    async def leads(
        self, broker_id: int, partitions: Sequence[TopicPartitionKey], timeout_s: float
    ) -> bool:
        """Whether broker `broker_id` answers that it leads every one of `partitions`."""
        ...


class GrpcPeers:
    """_Peers over the brokers' gRPC Metadata (addresses from the metadata image)."""

    def __init__(self, channels: ChannelPool, image: Callable[[], MetadataImage]) -> None:
        self._channels = channels
        self._image = image

    async def leads(
        self, broker_id: int, partitions: Sequence[TopicPartitionKey], timeout_s: float
    ) -> bool:
        broker = self._image().brokers.get(broker_id)
        if broker is None:
            return False
        stub = broker_pb2_grpc.BrokerServiceStub(
            self._channels.get(f"{broker.host}:{broker.port}")
        )
        try:
            reply = await stub.Metadata(
                broker_pb2.MetadataRequest(topics=sorted({t for t, _ in partitions})),
                timeout=timeout_s,
                # signed: a broker's question, not subject to client ACLs
                metadata=self._channels.auth.metadata(METADATA),
            )
        except grpc.aio.AioRpcError:
            return False
        led = {(t.name, p.partition) for t in reply.topics for p in t.partitions
               if p.leader_id == broker_id}
        return set(partitions) <= led


class ControlledShutdown:
    def __init__(
        self,
        broker_id: int,
        client: ControllerClient,
        raft: _RaftNode,
        applied: _AppliedMetadata,
        broker_epoch: Callable[[], int],
        timeout_s: float,
        peers: _Peers,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._broker_id = broker_id
        self._client = client
        self._raft = raft
        self._applied = applied
        self._broker_epoch = broker_epoch
        self._timeout_s = timeout_s
        self._peers = peers

    def _skip_reason(self) -> str | None:
        epoch = self._broker_epoch()
        if epoch < 0:
            return "never registered"
        broker = self._raft.image.brokers.get(self._broker_id)
        if broker is None or broker.epoch != epoch or broker.fenced:
            return "already fenced"
        others = [b for b in self._raft.image.brokers.values()
                  if not b.fenced and b.broker_id != self._broker_id]
        return None if others else "no other live broker to hand over to"

    async def run(self) -> str:
        """Hand over, within the deadline; returns what happened (for the log)."""
        skip = self._skip_reason()
        if skip is not None:
            return f"skipped ({skip})"
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self._timeout_s
        request = controller_pb2.ControlledShutdownRequest(
            broker_id=self._broker_id, broker_epoch=self._broker_epoch()
        )
        led = [(topic.name, index) for topic, index, p in self._raft.image.iter_partitions()
               if p.leader == self._broker_id]
        try:
            response = await self._client.controlled_shutdown(request, self._timeout_s)
        except ControllerTimeoutError as exc:
            return f"gave up: {exc}"
        if response.error_code:
            return f"refused: {response.error_message}"
        target = response.metadata_offset
        applied = await self._applied.wait_for_metadata(
            lambda image: image.offset >= target, max(0.0, deadline - loop.time())
        )
        if not applied:
            return f"gave up waiting to apply metadata offset {target}"
        if not await self._new_leaders_lead(led, deadline):
            return "gave up waiting for the new leaders to take over"
        handed = await self._hand_over_raft(deadline)
        elapsed_ms = (loop.time() - started) * 1000
        await asyncio.sleep(max(0.0, min(HANDED_OVER_LINGER_S, deadline - loop.time())))
        orphans = response.partitions_without_leader
        return (
            f"done in {elapsed_ms:.0f} ms (fenced at metadata offset {target}"
            + (f"; {orphans} partition(s) had no other in-sync replica" if orphans else "")
            + (f"; {handed}" if handed else "")
            + ")"
        )

    async def _new_leaders_lead(self, led: Sequence[TopicPartitionKey], deadline: float) -> bool:
        """Until every partition this broker led is led, by the new leader's own account."""
        image = self._raft.image
        waiting: dict[int, list[TopicPartitionKey]] = {}
        for topic, index in led:
            registration = image.partition(topic, index)
            if registration is not None and registration.leader not in (NO_LEADER, self._broker_id):
                waiting.setdefault(registration.leader, []).append((topic, index))
        loop = asyncio.get_running_loop()
        while waiting:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            for broker_id, partitions in list(waiting.items()):
                timeout_s = min(TAKEOVER_ASK_TIMEOUT_S, max(0.01, remaining))
                if await self._peers.leads(broker_id, partitions, timeout_s):
                    del waiting[broker_id]
            if waiting:
                await asyncio.sleep(TAKEOVER_POLL_S)
        return True

    async def _hand_over_raft(self, deadline: float) -> str:
        if not self._raft.is_leader():
            return ""
        voters = [b for b in self._raft.image.brokers.values()
                  if b.voter and not b.fenced and b.broker_id != self._broker_id]
        if not voters:  # the others are stopping too (`cluster stop`): no one to hand to
            return "no other live voter to hand the metadata quorum to"
        loop = asyncio.get_running_loop()
        asked_at = 0.0
        while loop.time() < deadline:
            if not self._raft.is_leader():
                return "the metadata quorum has a new leader"
            if loop.time() - asked_at >= RAFT_TRANSFER_RETRY_S:
                self._raft.transfer_leadership()
                asked_at = loop.time()
            await asyncio.sleep(RAFT_TRANSFER_POLL_S)
        return "the metadata quorum's leadership was not handed over in time"
