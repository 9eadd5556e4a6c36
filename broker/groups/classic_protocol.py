"""The coordinator's side of Kafka's classic group protocol, for unmodified Kafka clients.

Why a module of its own: the group coordinator (coordinator.py) owns the groups of the
__consumer_offsets partitions this broker leads, their offsets and their failover; the classic
state machine (classic.py) is pure. This module is the runtime between the Kafka handlers and
those two: it turns JoinGroup and SyncGroup into waits on the state machine's reply callbacks
(with their rebalance timeouts), answers Heartbeat and LeaveGroup, checks a generation before
storing an OffsetCommit, and describes a group. It uses only the coordinator's public methods
(classic_group, find_classic_group, store_offsets, partition_counts, now_ms), so the
coordinator's storage can change without touching it. Event-loop only.
"""

from __future__ import annotations

import asyncio
import uuid

from raftka.broker.groups.classic import assigned_partitions, subscribed_topics
from raftka.broker.groups.coordinator import GroupCoordinator
from raftka.broker.groups.state import CommittedOffset


class ClassicProtocol:
    """The coordinator's side of Kafka's classic group protocol (JoinGroup, SyncGroup,
    Heartbeat, LeaveGroup, OffsetCommit with generations) for unmodified Kafka clients. Group
    offsets are shared with the gRPC groups; a group id is used by one protocol at a time."""

    def __init__(self, coordinator: GroupCoordinator) -> None:
        self._coordinator = coordinator

    async def join(self, group_id: str, member_id: str, client_id: str, protocol_type: str,
                   protocols: list[tuple[str, bytes]], session_timeout_ms: int,
                   rebalance_timeout_ms: int, require_known_member_id: bool,
                   group_instance_id: str | None = None) -> dict:
        group = self._coordinator.classic_group(group_id)
        future: asyncio.Future[dict] = asyncio.get_running_loop().create_future()

        def reply(values: dict) -> None:
            if not future.done():
                future.set_result(values)

        group.join(member_id=member_id, client_id=client_id, protocol_type=protocol_type,
                   protocols=protocols, session_timeout_ms=session_timeout_ms,
                   rebalance_timeout_ms=rebalance_timeout_ms,
                   require_known_member_id=require_known_member_id,
                   now_ms=self._coordinator.now_ms(),
                   new_member_id=f"{client_id or 'member'}-{uuid.uuid4()}", reply=reply,
                   group_instance_id=group_instance_id)
        try:
            return await asyncio.wait_for(future, rebalance_timeout_ms / 1000 + 5)
        except TimeoutError:
            return {"error_code": "REBALANCE_IN_PROGRESS", "member_id": member_id,
                    "generation_id": -1, "protocol_name": "", "leader": "", "members": []}

    async def sync(self, group_id: str, member_id: str, generation: int,
                   assignments: dict[str, bytes], group_instance_id: str | None = None) -> dict:
        group = self._coordinator.classic_group(group_id)
        future: asyncio.Future[dict] = asyncio.get_running_loop().create_future()

        def reply(values: dict) -> None:
            if not future.done():
                future.set_result(values)

        group.sync(member_id=member_id, generation=generation, assignments=assignments,
                   now_ms=self._coordinator.now_ms(), reply=reply,
                   group_instance_id=group_instance_id)
        member = group.members.get(member_id)
        timeout_s = (member.rebalance_timeout_ms if member else 30_000) / 1000 + 5
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            return {"error_code": "REBALANCE_IN_PROGRESS", "assignment": b""}

    def heartbeat(self, group_id: str, member_id: str, generation: int,
                  group_instance_id: str | None = None) -> str:
        group = self._coordinator.classic_group(group_id)
        return group.heartbeat(member_id, generation, self._coordinator.now_ms(),
                               group_instance_id)

    def leave(self, group_id: str,
              members: list[tuple[str, str | None]]) -> list[tuple[str, str | None, str]]:
        """(member id, instance id, error name) per (member id, instance id) leaving."""
        group = self._coordinator.classic_group(group_id)
        now_ms = self._coordinator.now_ms()
        return [(m, instance, group.leave(m, instance, now_ms)) for m, instance in members]

    async def commit(self, group_id: str, member_id: str, generation: int,
                     offsets: dict[tuple[str, int], tuple[int, str]],
                     group_instance_id: str | None = None) -> dict[tuple[str, int], str]:
        """Error name per partition for an OffsetCommit from a Kafka client."""
        group = self._coordinator.classic_group(group_id)
        verdict = group.check_commit(member_id, generation, group_instance_id)
        if verdict != "NONE":
            return dict.fromkeys(offsets, verdict)
        existing = self._coordinator.partition_counts()
        now_ms = self._coordinator.now_ms()
        result: dict[tuple[str, int], str] = {}
        accepted: dict[tuple[str, int], CommittedOffset] = {}
        for (topic, partition), (offset, metadata) in offsets.items():
            if not 0 <= partition < existing.get(topic, 0):
                result[(topic, partition)] = "UNKNOWN_TOPIC_OR_PARTITION"
            else:
                accepted[(topic, partition)] = CommittedOffset(offset, metadata, now_ms)
                result[(topic, partition)] = "NONE"
        if accepted:
            await self._coordinator.store_offsets(group_id, accepted)
        return result

    def describe(self, group_id: str) -> dict | None:
        group = self._coordinator.find_classic_group(group_id)
        if group is None:
            return None
        return {
            "state": group.state, "protocol_type": group.protocol_type,
            "protocol_name": group.protocol_name, "generation": group.generation,
            "members": [{"member_id": m.member_id, "client_id": m.client_id,
                         "group_instance_id": m.group_instance_id,
                         "metadata": dict(m.protocols).get(group.protocol_name, b""),
                         "assignment": m.assignment,
                         "topics": subscribed_topics(dict(m.protocols).get(
                             group.protocol_name, b"")),
                         "partitions": assigned_partitions(m.assignment)}
                        for m in group.members.values()],
        }
