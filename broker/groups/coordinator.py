"""The group coordinator: serves the groups whose __consumer_offsets partition this broker
leads.

How it works: a group lives in partition partition_for_group(group) of __consumer_offsets, and
the leader of that partition is the group's coordinator. When this broker becomes leader of
such a partition it replays the partition's log into memory (offsets; membership is kept in
memory only and rebuilt as members heartbeat again); when it stops leading it drops them. An
offset commit is written to the partition with acks=all and applied only once replicated, so
the coordinator fails over with ordinary partition failover and nothing acknowledged is lost.
Every `snapshot_every_records` writes, the live offsets are written as one snapshot record and
the log before it is dropped (followers follow the leader's log start), so the topic stays
small. Event-loop only.

The classic protocol of unmodified Kafka clients (JoinGroup/SyncGroup) is driven from
classic_protocol.py through the public methods under "for protocol drivers" below; it shares
this coordinator's groups, offsets and failover, and never touches its private state.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from raftka.broker.errors import BrokerError
from raftka.broker.groups import deletion, offsets_log
from raftka.broker.groups.classic import ClassicGroup, assigned_partitions, subscribed_topics
from raftka.broker.groups.offsets_log import OFFSETS_TOPIC, partition_for_group
from raftka.broker.groups.state import CommittedOffset, ConsumerGroup, GroupError
from raftka.broker.partition import TopicPartition
from raftka.broker.produce_path import ProducePath
from raftka.broker.replica_manager import ReplicaManager
from raftka.proto.raftka.v1 import broker_pb2, common_pb2, group_pb2

log = logging.getLogger("raftka.groups")
Code = common_pb2.ErrorCode
READ_CHUNK_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class GroupSettings:
    session_timeout_ms: int = 10_000
    session_timeout_min_ms: int = 1_000
    session_timeout_max_ms: int = 60_000
    heartbeat_interval_ms: int = 1_000
    snapshot_every_records: int = 1_000
    commit_timeout_ms: int = 10_000
    # Kafka's group.initial.rebalance.delay.ms: members starting together join one generation.
    classic_initial_delay_ms: int = 300


@dataclass
class _Loaded:
    """The groups of one __consumer_offsets partition this broker coordinates."""

    leader_epoch: int
    groups: dict[str, ConsumerGroup] = field(default_factory=dict)
    # Membership is not stored: for one session after taking over, members re-announce what
    # they own before anything they might hold is handed to someone else.
    hold_assignments_until_ms: int = 0
    # Groups of unmodified Kafka clients (JoinGroup/SyncGroup); offsets stay in `groups`.
    classic: dict[str, ClassicGroup] = field(default_factory=dict)
    records_since_snapshot: int = 0
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class CoordinatorError(BrokerError):
    pass


def _error(code_name: str, message: str) -> CoordinatorError:
    error = CoordinatorError(message)
    error.code = Code.Value(code_name)
    return error


class GroupCoordinator:
    def __init__(
        self,
        replicas: ReplicaManager,
        produce: ProducePath,
        clock_ms: Callable[[], int],
        settings: GroupSettings,
        lease_problem: Callable[[], str | None] = lambda: None,
    ) -> None:
        """`lease_problem`: why this broker may lead nothing now (fenced, lease lapsed); a
        coordinator that may have been replaced answers NOT_COORDINATOR instead of handing
        out partitions a new coordinator may hand to someone else."""
        self._replicas = replicas
        self._produce = produce
        self._clock_ms = clock_ms
        self.settings = settings
        self._lease_problem = lease_problem
        self._loaded: dict[int, _Loaded] = {}
        self._loading: dict[int, asyncio.Task[None]] = {}

    # ----------------------------------------------------------------- leadership
    def offsets_partitions(self) -> int:
        topic = self._replicas.image.topics.get(OFFSETS_TOPIC)
        return len(topic.partitions) if topic is not None else 0

    def refresh(self) -> None:
        """Follow leadership of __consumer_offsets partitions (called periodically).

        Looks those partitions up by index rather than scanning every hosted partition: with
        10,000 hosted, the scan cost the event loop ~3% of a core, ten times a second."""
        hosted = self._replicas.partitions
        for index in range(self.offsets_partitions()):
            tp = TopicPartition(OFFSETS_TOPIC, index)
            partition = hosted.get(tp)
            if partition is None:
                continue
            loaded = self._loaded.get(tp.partition)
            leading = partition.is_leader
            if leading and (loaded is None or loaded.leader_epoch != partition.leader_epoch):
                if tp.partition not in self._loading:
                    self._loading[tp.partition] = asyncio.create_task(
                        self._load(tp.partition, partition.leader_epoch)
                    )
            elif not leading and loaded is not None:
                log.info("no longer coordinating __consumer_offsets-%d", tp.partition)
                self._unload(tp.partition)
        for index in [
            i
            for i in self._loaded
            if TopicPartition(OFFSETS_TOPIC, i) not in self._replicas.partitions
        ]:
            self._unload(index)

    def _unload(self, index: int) -> None:
        """Forget a partition's groups; the classic requests they were holding are answered
        NOT_COORDINATOR, not dropped (a dropped JoinGroup hangs its client for minutes)."""
        loaded = self._loaded.pop(index, None)
        if loaded is not None:
            for group in loaded.classic.values():
                group.resign()

    async def _load(self, index: int, leader_epoch: int) -> None:
        try:
            partition = self._replicas.partitions[TopicPartition(OFFSETS_TOPIC, index)]
            groups: dict[str, ConsumerGroup] = {}
            offset = partition.log_start_offset
            end = partition.log_end_offset
            count = 0
            while offset < end:
                data = partition.log.read(offset, READ_CHUNK_BYTES, end)
                if not data:
                    break
                for record_offset, record in offsets_log.decode(data, from_offset=offset):
                    offsets_log.replay(groups, record)
                    offset = record_offset + 1
                    count += 1
            if partition.is_leader and partition.leader_epoch == leader_epoch:
                # Epoch 0 is the partition's first leader: there was no coordinator before.
                hold = self._clock_ms() + self.settings.session_timeout_ms if leader_epoch else 0
                self._unload(index)  # an older epoch's groups, if any, resign first
                self._loaded[index] = _Loaded(leader_epoch, groups, hold_assignments_until_ms=hold)
                log.info(
                    "coordinating __consumer_offsets-%d: %d group(s) from %d record(s)",
                    index,
                    len(groups),
                    count,
                )
        except Exception:
            log.exception("loading __consumer_offsets-%d failed", index)
        finally:
            self._loading.pop(index, None)

    def _groups_for(self, group_id: str) -> tuple[int, _Loaded]:
        if not group_id:
            raise _error("INVALID_GROUP_ID", "the group id is empty")
        problem = self._lease_problem()
        if problem is not None:
            raise _error("NOT_COORDINATOR", problem)
        count = self.offsets_partitions()
        if count == 0:
            raise _error("COORDINATOR_NOT_AVAILABLE", f"{OFFSETS_TOPIC} does not exist yet")
        index = partition_for_group(group_id, count)
        loaded = self._loaded.get(index)
        if loaded is None:
            partition = self._replicas.partitions.get(TopicPartition(OFFSETS_TOPIC, index))
            if index in self._loading or (partition is not None and partition.is_leader):
                self.refresh()
                raise _error(
                    "COORDINATOR_LOAD_IN_PROGRESS", f"still loading the state of group {group_id}"
                )
            raise _error(
                "NOT_COORDINATOR",
                f"broker {self._replicas.broker_id} is not the coordinator of group {group_id}",
            )
        return index, loaded

    # -------------------------------------------------------- for protocol drivers
    # What a protocol driver outside this module (classic_protocol.py) needs: the clock, the
    # topics, a group's classic state, and durable offset commits.
    def now_ms(self) -> int:
        """The coordinator's clock, in milliseconds (what session timeouts are measured in)."""
        return self._clock_ms()

    def partition_counts(self) -> dict[str, int]:
        """Partition count of every topic a group can consume (internal topics left out)."""
        return {
            name: len(t.partitions)
            for name, t in self._replicas.image.topics.items()
            if not t.internal
        }

    def classic_group(self, group_id: str) -> ClassicGroup:
        """The classic-protocol state of a group this broker coordinates, created on first use.

        Raises CoordinatorError: INVALID_GROUP_ID, COORDINATOR_NOT_AVAILABLE,
        COORDINATOR_LOAD_IN_PROGRESS or NOT_COORDINATOR as for any group request, and
        INCONSISTENT_GROUP_PROTOCOL while the group has members of the gRPC protocol (a group id
        is used by one protocol at a time).
        """
        _, loaded = self._groups_for(group_id)
        modern = loaded.groups.get(group_id)
        if modern is not None and modern.members:
            raise _error("INCONSISTENT_GROUP_PROTOCOL",
                         f"group {group_id} has members using the gRPC group protocol")
        group = loaded.classic.get(group_id)
        if group is None:
            group = ClassicGroup(group_id, initial_delay_ms=self.settings.classic_initial_delay_ms)
            loaded.classic[group_id] = group
        return group

    def find_classic_group(self, group_id: str) -> ClassicGroup | None:
        """The classic-protocol state of a group this broker coordinates, or None if it has
        none; creates nothing. Raises CoordinatorError when this broker cannot answer for the
        group (not its coordinator, still loading, ...)."""
        _, loaded = self._groups_for(group_id)
        return loaded.classic.get(group_id)

    async def store_offsets(
        self, group_id: str, offsets: Mapping[tuple[str, int], CommittedOffset]
    ) -> None:
        """Commit offsets of a group this broker coordinates, without a generation check (the
        caller has done its protocol's): written to the group's __consumer_offsets partition
        with acks=all, then applied, then snapshotted when due. Raises CoordinatorError if this
        broker is not the coordinator or storing fails (then nothing is applied)."""
        index, loaded = self._groups_for(group_id)
        records = [offsets_log.commit_record(group_id, t, p, o) for (t, p), o in offsets.items()]

        def apply() -> None:
            loaded.groups.setdefault(group_id, ConsumerGroup(group_id)).commit(offsets)

        await self._write(index, loaded, records, apply)
        await self._maybe_snapshot(index, loaded)

    # ----------------------------------------------------------------- heartbeats
    def heartbeat(
        self, request: group_pb2.ConsumerGroupHeartbeatRequest
    ) -> group_pb2.ConsumerGroupHeartbeatResponse:
        _, loaded = self._groups_for(request.group_id)
        settings = self.settings
        session = request.session_timeout_ms or settings.session_timeout_ms
        if not settings.session_timeout_min_ms <= session <= settings.session_timeout_max_ms:
            raise _error(
                "INVALID_SESSION_TIMEOUT",
                f"session timeout {session} ms is outside "
                f"[{settings.session_timeout_min_ms}, {settings.session_timeout_max_ms}]",
            )
        group = loaded.groups.setdefault(request.group_id, ConsumerGroup(request.group_id))
        owned = [(t.topic, p) for t in request.owned_partitions for p in t.partitions]
        try:
            result = group.heartbeat(
                member_id=request.member_id,
                member_epoch=request.member_epoch,
                client_id=request.client_id,
                subscribed_topics=(
                    list(request.subscribed_topic_names) if request.has_subscription else None
                ),
                subscribed_regex=request.subscribed_topic_regex,
                assignor=request.server_assignor,
                owned=owned,
                session_timeout_ms=session,
                partition_counts=self.partition_counts(),
                now_ms=self._clock_ms(),
                new_member_id=uuid.uuid4().hex,
                hold_until_ms=loaded.hold_assignments_until_ms,
            )
        except GroupError as exc:
            raise _error(exc.code, str(exc)) from None
        response = group_pb2.ConsumerGroupHeartbeatResponse(
            member_id=result.member_id,
            member_epoch=result.member_epoch,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            session_timeout_ms=result.session_timeout_ms,
            has_assignment=True,
        )
        response.assignment.extend(_grouped(result.assignment))
        return response

    def expire_members(self) -> None:
        now_ms = self._clock_ms()
        counts = self.partition_counts()
        for loaded in self._loaded.values():
            for classic in loaded.classic.values():
                gone = classic.tick(now_ms)
                if gone:
                    log.info("group %s: removed %s (session expired)", classic.group_id, gone)
            for group in loaded.groups.values():
                gone = group.expire(now_ms, counts)
                if gone:
                    log.info(
                        "group %s: removed %s (session expired or revocation overdue)",
                        group.group_id,
                        gone,
                    )

    # --------------------------------------------------------------------- offsets
    async def commit(
        self, request: group_pb2.OffsetCommitRequest
    ) -> group_pb2.OffsetCommitResponse:
        index, loaded = self._groups_for(request.group_id)
        group = loaded.groups.setdefault(request.group_id, ConsumerGroup(request.group_id))
        try:
            group.check_commit(request.member_id, request.member_epoch)
        except GroupError as exc:
            raise _error(exc.code, str(exc)) from None
        now_ms = self._clock_ms()
        existing = self.partition_counts()
        response = group_pb2.OffsetCommitResponse()
        accepted: dict[tuple[str, int], CommittedOffset] = {}
        for item in request.partitions:
            reply = response.partitions.add(topic=item.topic, partition=item.partition)
            if not 0 <= item.partition < existing.get(item.topic, 0):
                reply.error_code = Code.UNKNOWN_TOPIC_OR_PARTITION
                reply.error_message = f"unknown partition {item.topic}-{item.partition}"
            elif item.offset < 0:
                reply.error_code = Code.INVALID_REQUEST
                reply.error_message = f"offset {item.offset} is negative"
            else:
                accepted[(item.topic, item.partition)] = CommittedOffset(
                    item.offset, item.metadata, now_ms
                )
        if accepted:
            records = [
                offsets_log.commit_record(request.group_id, t, p, o)
                for (t, p), o in accepted.items()
            ]
            await self._write(index, loaded, records, lambda: group.commit(accepted))
            await self._maybe_snapshot(index, loaded)
        return response

    async def _write(
        self,
        index: int,
        loaded: _Loaded,
        records: list[group_pb2.GroupLogRecord],
        apply: Callable[[], object],
    ) -> int:
        """Append `records` with acks=all and, once they are replicated, `apply` them to
        memory, both under the partition's write lock: a snapshot (taken under the same
        lock) then holds every record stored before it, so dropping the log before the
        snapshot loses nothing that was acknowledged."""
        async with loaded.write_lock:
            reply = await self._append(index, records)
            apply()
            loaded.records_since_snapshot += len(records)
        return reply.base_offset

    async def _append(
        self, index: int, records: list[group_pb2.GroupLogRecord]
    ) -> broker_pb2.PartitionProduceResponse:
        reply = await self._produce.append_internal(
            OFFSETS_TOPIC,
            index,
            offsets_log.encode(records, self._clock_ms()),
            self.settings.commit_timeout_ms,
        )
        if reply.error_code:
            code = Code.Name(reply.error_code)
            if code in ("NOT_LEADER_OR_FOLLOWER", "LEADER_NOT_AVAILABLE"):
                code = "NOT_COORDINATOR"
            raise _error(code, f"storing the commit failed: {reply.error_message}")
        return reply

    async def _maybe_snapshot(self, index: int, loaded: _Loaded) -> None:
        if loaded.records_since_snapshot < self.settings.snapshot_every_records:
            return
        async with loaded.write_lock:
            if loaded.records_since_snapshot < self.settings.snapshot_every_records:
                return  # another commit's snapshot came first
            # Built under the lock: every commit stored so far is applied, none is halfway.
            record = offsets_log.snapshot_record(loaded.groups, self.partition_counts())
            base = (await self._append(index, [record])).base_offset
            loaded.records_since_snapshot = 0
        partition = self._replicas.partitions.get(TopicPartition(OFFSETS_TOPIC, index))
        if partition is not None:
            # Everything after `base` was written after the snapshot: only older log goes.
            await self._replicas.on_writer(partition.log.advance_start_offset, base)

    def fetch_offsets(self, request: group_pb2.OffsetFetchRequest) -> group_pb2.OffsetFetchResponse:
        _, loaded = self._groups_for(request.group_id)
        group = loaded.groups.get(request.group_id)
        live = self.partition_counts()
        stored = group.offsets if group is not None else {}
        wanted = [(t.topic, p) for t in request.partitions for p in t.partitions] or sorted(
            tp for tp in stored if tp[0] in live
        )
        response = group_pb2.OffsetFetchResponse()
        for topic, partition in wanted:
            found = stored.get((topic, partition)) if topic in live else None
            response.offsets.add(
                topic=topic,
                partition=partition,
                offset=found.offset if found else -1,
                metadata=found.metadata if found else "",
                commit_timestamp_ms=found.commit_timestamp_ms if found else -1,
            )
        return response

    def committed_offsets(self) -> Iterator[tuple[str, str, int, int]]:
        """(group, topic, partition, offset) of every group coordinated here (for the lag
        metric; read at scrape time on the event loop)."""
        for loaded in self._loaded.values():
            for group in loaded.groups.values():
                for (topic, partition), offset in group.offsets.items():
                    yield group.group_id, topic, partition, offset.offset

    # ---------------------------------------------------------------------- admin
    def list_local(self) -> list[group_pb2.GroupListing]:
        return [
            group_pb2.GroupListing(
                group_id=g.group_id,
                state=g.state,
                members=len(g.members),
                coordinator_id=self._replicas.broker_id,
            )
            for loaded in self._loaded.values()
            for g in loaded.groups.values()
            if g.group_id not in loaded.classic or not loaded.classic[g.group_id].members
        ] + [
            group_pb2.GroupListing(
                group_id=c.group_id,
                state=c.state,
                members=len(c.members),
                coordinator_id=self._replicas.broker_id,
            )
            for loaded in self._loaded.values()
            for c in loaded.classic.values()
            if c.members
        ]

    def describe(self, group_id: str) -> group_pb2.DescribeGroupResponse:
        _, loaded = self._groups_for(group_id)
        group = loaded.groups.get(group_id)
        classic = loaded.classic.get(group_id)
        if classic is not None and classic.members:
            group = group or ConsumerGroup(group_id)
            response = group_pb2.DescribeGroupResponse(
                group_id=group_id, state=classic.state, group_epoch=classic.generation,
                assignor=classic.protocol_name, coordinator_id=self._replicas.broker_id)
            for kafka_member in classic.members.values():
                metadata = dict(kafka_member.protocols).get(classic.protocol_name, b"")
                entry = response.members.add(
                    member_id=kafka_member.member_id, client_id=kafka_member.client_id,
                    member_epoch=classic.generation,
                    subscribed_topic_names=sorted(subscribed_topics(metadata)))
                entry.assignment.extend(_grouped(frozenset(
                    assigned_partitions(kafka_member.assignment))))
            self._add_offsets(response, group)
            return response
        if group is None:
            raise _error("GROUP_ID_NOT_FOUND", f"group {group_id} does not exist")
        response = group_pb2.DescribeGroupResponse(
            group_id=group_id,
            state=group.state,
            group_epoch=group.group_epoch,
            assignor=group.assignor,
            coordinator_id=self._replicas.broker_id,
        )
        for member in group.members.values():
            entry = response.members.add(
                member_id=member.member_id,
                client_id=member.client_id,
                member_epoch=member.epoch,
                subscribed_topic_names=sorted(member.subscribed_topics),
                subscribed_topic_regex=member.subscribed_regex,
            )
            entry.assignment.extend(_grouped(member.assigned))
        self._add_offsets(response, group)
        return response

    def _add_offsets(self, response: group_pb2.DescribeGroupResponse,
                     group: ConsumerGroup) -> None:
        live = self.partition_counts()
        for (topic, partition), offset in sorted(group.offsets.items()):
            if topic in live:
                response.offsets.add(
                    topic=topic,
                    partition=partition,
                    offset=offset.offset,
                    metadata=offset.metadata,
                    commit_timestamp_ms=offset.commit_timestamp_ms,
                )

    async def delete(self, group_id: str) -> None:
        index, loaded = self._groups_for(group_id)
        group = loaded.groups.get(group_id)
        classic = loaded.classic.get(group_id)
        members = (len(group.members) if group else 0) + (len(classic.members) if classic else 0)
        if members:  # checked first: a classic group that never committed has no offsets
            raise _error(
                "NON_EMPTY_GROUP", f"group {group_id} has {members} member(s); stop them first"
            )
        if group is None:
            raise _error("GROUP_ID_NOT_FOUND", f"group {group_id} does not exist")

        def forget() -> None:
            loaded.groups.pop(group_id, None)
            if classic is not None and not classic.members:
                loaded.classic.pop(group_id, None)

        await self._write(index, loaded, [offsets_log.tombstone_record(group_id)], forget)

    async def delete_offsets(
        self, request: group_pb2.DeleteOffsetsRequest
    ) -> group_pb2.DeleteOffsetsResponse:
        """Kafka's OffsetDelete (rules in deletion.py): the offsets of the topics that may
        go are removed durably (one record in __consumer_offsets, written before memory
        changes); the others answer GROUP_SUBSCRIBED_TO_TOPIC."""
        index, loaded = self._groups_for(request.group_id)
        group = loaded.groups.get(request.group_id)
        classic = loaded.classic.get(request.group_id)
        if group is None:
            raise _error("GROUP_ID_NOT_FOUND", f"group {request.group_id} does not exist")
        subscribed = deletion.subscribed_by_members(group, classic, self.partition_counts())
        if subscribed is None:
            raise _error("NON_EMPTY_GROUP",
                         f"group {request.group_id} has members of protocol type "
                         f"{classic.protocol_type if classic else '?'}; stop them first")
        wanted: dict[str, set[int]] = {}
        for item in request.topics:
            wanted.setdefault(item.topic, set()).update(item.partitions)
        plan = deletion.plan_offset_delete(group.offsets, wanted, subscribed)
        response = group_pb2.DeleteOffsetsResponse()
        for topic, code in plan.outcome.items():
            result = response.topics.add(topic=topic)
            if code:
                result.error_code = Code.Value(code)  # type: ignore[assignment]
                result.error_message = (f"group {request.group_id} has members subscribed "
                                        f"to {topic}; its offsets stay")
            else:
                result.partitions_deleted = sum(1 for t, _ in plan.partitions if t == topic)
        if plan.partitions:
            gone = plan.partitions
            await self._write(index, loaded,
                              [offsets_log.offsets_deleted_record(request.group_id, gone)],
                              lambda: offsets_log.drop_offsets(group, gone))
        return response


def _grouped(partitions: frozenset[tuple[str, int]]) -> list[group_pb2.TopicPartitions]:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in partitions:
        by_topic.setdefault(topic, []).append(partition)
    return [
        group_pb2.TopicPartitions(topic=t, partitions=sorted(ps))
        for t, ps in sorted(by_topic.items())
    ]
