"""Consumer: reads partitions in offset order from their leaders.

How it works: each assigned partition has a position (the next offset to read). `poll()`
sends one Fetch per leader broker for the partitions it leads (long-polling up to
`fetch_max_wait_ms`), checks each returned batch's CRC and decodes it here — the broker sent
the stored bytes untouched — then advances the positions. A partition without a position
starts at the earliest or latest offset (`auto_offset_reset`, the seed notes' fromBeginning).
Leader changes and unreachable brokers refresh the metadata and retry.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc

from raftka.client.errors import (
    OffsetOutOfRangeError,
    RaftkaError,
    UnknownTopicOrPartitionError,
    error_for,
)
from raftka.client.group_member import CommitFailedError, GroupMembership  # noqa: F401 - re-export
from raftka.client.metadata import ClusterMetadata
from raftka.client.serialization import Deserializer, resolve_deserializer
from raftka.client.transport import Connections, bootstrap_list, translate_rpc_error
from raftka.client.types import TopicPartition
from raftka.proto.raftka.v1 import broker_pb2, common_pb2
from raftka.records import decode_batches, iter_headers

log = logging.getLogger("raftka.client")
Code = common_pb2.ErrorCode
EARLIEST = -2
LATEST = -1


@dataclass(frozen=True, slots=True)
class ConsumerRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: Any
    value: Any
    headers: tuple[tuple[str, bytes | None], ...]


class Consumer:
    def __init__(
        self,
        *topics: str,
        bootstrap_servers: str | list[str] | None = None,
        client_id: str = "raftka-python",
        auto_offset_reset: str = "latest",
        fetch_min_bytes: int = 1,
        fetch_max_wait_ms: int = 500,
        fetch_max_bytes: int = 52_428_800,
        max_partition_fetch_bytes: int = 1_048_576,
        max_poll_records: int = 500,
        request_timeout_ms: int = 30_000,
        consumer_timeout_ms: int | None = None,
        key_deserializer: str | Deserializer | None = None,
        value_deserializer: str | Deserializer | None = None,
        group_id: str | None = None,
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5_000,
        session_timeout_ms: int | None = None,
        group_assignor: str = "range",
        on_assign: Callable[[list[TopicPartition]], None] | None = None,
        on_revoke: Callable[[list[TopicPartition]], None] | None = None,
    ) -> None:
        if auto_offset_reset not in ("earliest", "latest", "none"):
            raise ValueError("auto_offset_reset must be 'earliest', 'latest' or 'none'")
        self.client_id = client_id
        self.auto_offset_reset = auto_offset_reset
        self.fetch_min_bytes = fetch_min_bytes
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.fetch_max_bytes = fetch_max_bytes
        self.max_partition_fetch_bytes = max_partition_fetch_bytes
        self.max_poll_records = max_poll_records
        self.request_timeout_s = request_timeout_ms / 1000
        self.consumer_timeout_ms = consumer_timeout_ms
        self._key_deserializer = resolve_deserializer(key_deserializer)
        self._value_deserializer = resolve_deserializer(value_deserializer)
        self._connections = Connections()
        self.metadata = ClusterMetadata(
            bootstrap_list(bootstrap_servers), self._connections, self.request_timeout_s
        )
        # Next offset poll() hands out (what position() reports, as in Kafka) ...
        self._positions: dict[TopicPartition, int | None] = {}
        # ... and next offset to fetch; records in between wait in the buffer.
        self._fetch_positions: dict[TopicPartition, int] = {}
        self._subscription: list[str] = []
        self._buffer: deque[ConsumerRecord] = deque()
        self._paused: set[TopicPartition] = set()
        self._closed = False
        self.group_id = group_id
        self._auto_commit_requested = enable_auto_commit
        self.enable_auto_commit = enable_auto_commit and group_id is not None
        self._auto_commit_interval_s = auto_commit_interval_ms / 1000
        self._last_auto_commit = time.monotonic()
        # None: the broker's group.consumer.session.timeout.ms (as KIP-848 has it)
        self._session_timeout_ms = session_timeout_ms or 0
        self._group_assignor = group_assignor
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._membership: GroupMembership | None = None
        self._committer: ThreadPoolExecutor | None = None
        if topics:
            self.subscribe(list(topics))

    # ------------------------------------------------------------------- assignment
    def subscribe(self, topics: list[str] | None = None, group_id: str | None = None,
                  pattern: str = "") -> None:
        """Read these topics (or those whose name fully matches `pattern`). With a group id
        (here or in the constructor), the group's coordinator decides which partitions this
        consumer gets; without, it reads every partition itself."""
        if not topics and not pattern:
            raise ValueError("subscribe needs topics or a pattern")
        if group_id is not None and group_id != self.group_id:
            if self.group_id is None and self._auto_commit_requested:
                self.enable_auto_commit = True
            self.group_id = group_id
        self._subscription = list(topics or [])
        if self.group_id is None:
            if pattern:
                self.metadata.refresh()
                regex = re.compile(pattern)
                self._subscription += [t for t in self.metadata.topics if regex.fullmatch(t)]
            self._assign_subscription()
            return
        if self._membership is not None:
            self._membership.close(leave=True)
        self._set_assignment([])
        self._membership = GroupMembership(
            self.group_id,
            self._subscription,
            pattern,
            connections=self._connections,
            metadata=self.metadata,
            client_id=self.client_id,
            session_timeout_ms=self._session_timeout_ms,
            assignor=self._group_assignor,
            request_timeout_s=self.request_timeout_s,
        )
        self._membership.start()

    def _assign_subscription(self) -> None:
        wanted: list[TopicPartition] = []
        for topic in self._subscription:
            infos = self.metadata.ensure_topic(topic, allow_auto_create=False)
            wanted.extend(TopicPartition(topic, i.partition) for i in infos)
        self._set_assignment(wanted)

    def assign(self, partitions: Iterable[TopicPartition | tuple[str, int]]) -> None:
        """Read exactly these partitions (manual assignment; no group membership)."""
        if self._membership is not None:
            self._membership.close(leave=True)
            self._membership = None
        self._subscription = []
        self._set_assignment([TopicPartition(*tp) for tp in partitions])

    def _set_assignment(self, partitions: list[TopicPartition]) -> None:
        self._positions = {tp: self._positions.get(tp) for tp in partitions}
        self._fetch_positions = {
            tp: offset for tp, offset in self._fetch_positions.items() if tp in self._positions
        }
        self._buffer = deque(
            r for r in self._buffer if TopicPartition(r.topic, r.partition) in self._positions
        )

    def assignment(self) -> set[TopicPartition]:
        return set(self._positions)

    def pause(self, *partitions: TopicPartition) -> None:
        self._paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._paused.difference_update(partitions)

    # -------------------------------------------------------------------- positions
    def seek(self, tp: TopicPartition, offset: int) -> None:
        tp = TopicPartition(*tp)
        if tp not in self._positions:
            raise ValueError(f"{tp.topic}-{tp.partition} is not assigned to this consumer")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self._move_to(tp, offset)

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self._seek_to(partitions or tuple(self._positions), EARLIEST)

    def seek_to_end(self, *partitions: TopicPartition) -> None:
        self._seek_to(partitions or tuple(self._positions), LATEST)

    def _seek_to(self, partitions: Iterable[TopicPartition], spec: int) -> None:
        offsets = self._list_offsets([TopicPartition(*tp) for tp in partitions], spec)
        for tp, offset in offsets.items():
            self._move_to(tp, offset)

    def position(self, tp: TopicPartition) -> int:
        tp = TopicPartition(*tp)
        if self._positions.get(tp) is None:
            self._reset_positions([tp])
        position = self._positions[tp]
        assert position is not None
        return position

    def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return self._list_offsets([TopicPartition(*tp) for tp in partitions], EARLIEST)

    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return self._list_offsets([TopicPartition(*tp) for tp in partitions], LATEST)

    def _move_to(self, tp: TopicPartition, offset: int) -> None:
        self._positions[tp] = offset
        self._fetch_positions[tp] = offset
        self._drop_buffered(tp)

    def _drop_buffered(self, tp: TopicPartition) -> None:
        self._buffer = deque(
            r for r in self._buffer if (r.topic, r.partition) != (tp.topic, tp.partition)
        )

    def _reset_positions(self, partitions: list[TopicPartition]) -> None:
        if self.auto_offset_reset == "none":
            raise OffsetOutOfRangeError(
                f"no position for {partitions} and auto_offset_reset is 'none'"
            )
        spec = EARLIEST if self.auto_offset_reset == "earliest" else LATEST
        for tp, offset in self._list_offsets(partitions, spec).items():
            self._move_to(tp, offset)

    def _list_offsets(
        self, partitions: list[TopicPartition], spec: int
    ) -> dict[TopicPartition, int]:
        result: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + self.request_timeout_s
        pending = list(partitions)
        while pending:
            by_leader = self._group_by_leader(pending)
            retry: list[TopicPartition] = []
            for address, group in by_leader.items():
                request = broker_pb2.ListOffsetsRequest(
                    partitions=[
                        broker_pb2.ListOffsetsPartition(
                            topic=tp.topic, partition=tp.partition, timestamp_ms=spec
                        )
                        for tp in group
                    ]
                )
                try:
                    response = self._connections.broker(address).ListOffsets(
                        request, timeout=self.request_timeout_s
                    )
                except grpc.RpcError as exc:
                    self._give_up_if_late(deadline, translate_rpc_error(exc, address))
                    retry.extend(group)
                    continue
                for reply in response.partitions:
                    tp = TopicPartition(reply.topic, reply.partition)
                    if reply.error_code:
                        error = error_for(reply.error_code, reply.error_message)
                        if not error.retriable:
                            raise error
                        self._give_up_if_late(deadline, error)
                        retry.append(tp)
                    else:
                        result[tp] = reply.offset
            grouped = {tp for group in by_leader.values() for tp in group}
            retry.extend(tp for tp in pending if tp not in grouped)
            pending = retry
            if pending:
                time.sleep(0.1)
                self.metadata.refresh()
        return result

    @staticmethod
    def _give_up_if_late(deadline: float, error: Exception) -> None:
        if time.monotonic() > deadline:
            raise error

    def _group_by_leader(self, partitions: list[TopicPartition]) -> dict[str, list[TopicPartition]]:
        groups: dict[str, list[TopicPartition]] = {}
        for tp in partitions:
            address = self.metadata.leader_address(tp.topic, tp.partition)
            if address is None:
                self.metadata.ensure_topic(tp.topic, allow_auto_create=False)
                address = self.metadata.leader_address(tp.topic, tp.partition)
            if address is not None:
                groups.setdefault(address, []).append(tp)
        return groups

    # ------------------------------------------------------------------------ polling
    def poll(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Records that arrived within timeout_ms, grouped by partition (may be empty)."""
        if self._closed:
            raise RuntimeError("the consumer is closed")
        limit = max_records or self.max_poll_records
        deadline = time.monotonic() + timeout_ms / 1000
        self._maybe_auto_commit()
        while not self._buffer:
            self._sync_group()
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            self._fetch_once(max(0, min(remaining_ms, self.fetch_max_wait_ms)))
            if self._buffer or time.monotonic() >= deadline:
                break
        out: dict[TopicPartition, list[ConsumerRecord]] = {}
        while self._buffer and limit > 0:
            record = self._buffer.popleft()
            tp = TopicPartition(record.topic, record.partition)
            out.setdefault(tp, []).append(record)
            self._positions[tp] = record.offset + 1
            limit -= 1
        self._catch_up_positions()
        return out

    def _catch_up_positions(self) -> None:
        """A partition with nothing left in the buffer is consumed up to its fetch position
        (which may skip control batches and gaps that held no user records)."""
        buffered = {(r.topic, r.partition) for r in self._buffer}
        for tp, fetch_position in self._fetch_positions.items():
            if tp not in buffered and self._positions.get(tp) is not None:
                self._positions[tp] = max(self._positions[tp] or 0, fetch_position)

    def __iter__(self) -> Iterator[ConsumerRecord]:
        idle_since = time.monotonic()
        while not self._closed:
            batch = self.poll(timeout_ms=self.fetch_max_wait_ms)
            if batch:
                idle_since = time.monotonic()
                for records in batch.values():
                    yield from records
            elif (
                self.consumer_timeout_ms is not None
                and (time.monotonic() - idle_since) * 1000 >= self.consumer_timeout_ms
            ):
                return

    def _fetch_once(self, wait_ms: int) -> None:
        active = [tp for tp in self._positions if tp not in self._paused]
        missing = [tp for tp in active if self._positions[tp] is None]
        if missing:
            self._reset_positions(missing)
        if not active:
            time.sleep(wait_ms / 1000)
            return
        by_leader = self._group_by_leader(active)
        if not by_leader:
            time.sleep(min(wait_ms, 100) / 1000)
            self.metadata.refresh()
            return
        calls = []
        for address, group in by_leader.items():
            request = broker_pb2.FetchRequest(
                replica_id=-1,
                max_wait_ms=wait_ms,
                min_bytes=self.fetch_min_bytes,
                max_bytes=self.fetch_max_bytes,
                partitions=[
                    broker_pb2.FetchPartition(
                        topic=tp.topic,
                        partition=tp.partition,
                        fetch_offset=self._fetch_positions[tp],
                        partition_max_bytes=self.max_partition_fetch_bytes,
                        current_leader_epoch=-1,
                        last_fetched_epoch=-1,
                    )
                    for tp in group
                ],
            )
            future = self._connections.broker(address).Fetch.future(
                request, timeout=wait_ms / 1000 + self.request_timeout_s
            )
            calls.append((address, future))
        refresh = False
        for address, future in calls:
            try:
                response = future.result()
            except grpc.RpcError as exc:
                log.debug("fetch from %s failed: %s", address, translate_rpc_error(exc, address))
                refresh = True
                continue
            refresh |= self._absorb(response)
        if refresh:
            try:
                self.metadata.refresh()
            except RaftkaError as exc:
                log.debug("metadata refresh failed: %s", exc)
            time.sleep(0.05)

    def _absorb(self, response: broker_pb2.FetchResponse) -> bool:
        refresh = False
        for reply in response.partitions:
            tp = TopicPartition(reply.topic, reply.partition)
            position = self._fetch_positions.get(tp)
            if position is None or self._positions.get(tp) is None:
                continue
            if reply.error_code == Code.OFFSET_OUT_OF_RANGE:
                log.warning(
                    "%s-%d: offset %d out of range; resetting (%s)",
                    tp.topic,
                    tp.partition,
                    position,
                    self.auto_offset_reset,
                )
                self._reset_positions([tp])
                continue
            if reply.error_code:
                error = error_for(reply.error_code, reply.error_message)
                if not error.retriable and not isinstance(error, UnknownTopicOrPartitionError):
                    raise error
                refresh = True
                continue
            if reply.record_batches:
                self._fetch_positions[tp] = self._decode_into_buffer(
                    tp, reply.record_batches, position
                )
        return refresh

    def _decode_into_buffer(self, tp: TopicPartition, data: bytes, position: int) -> int:
        next_position = position
        for record in decode_batches(data, from_offset=position, verify_crc=True):
            self._buffer.append(
                ConsumerRecord(
                    tp.topic,
                    tp.partition,
                    record.offset,
                    record.timestamp_ms,
                    self._key_deserializer(record.key),
                    self._value_deserializer(record.value),
                    record.headers,
                )
            )
            next_position = record.offset + 1
        for _, header in iter_headers(data):  # control batches and gaps move us on too
            next_position = max(next_position, header.next_offset)
        return next_position

    # ------------------------------------------------------------------------ groups
    def _sync_group(self) -> None:
        """Take the coordinator's newest assignment: commit and drop revoked partitions
        first, then start the new ones at their committed offsets."""
        membership = self._membership
        if membership is None:
            return
        target = membership.take_assignment()
        if target is None:
            return
        current = set(self._positions)
        revoked = sorted(current - target)
        added = sorted(target - current)
        if revoked:
            if self.enable_auto_commit:
                self._commit_quietly(revoked)
            if self._on_revoke is not None:
                self._on_revoke(revoked)
        self._set_assignment(sorted(target))
        if added:
            for tp, offset in membership.committed(added).items():
                if offset >= 0 and tp in self._positions:
                    self._move_to(tp, offset)
            if self._on_assign is not None:
                self._on_assign(added)
        membership.report_owned(target)
        log.info(
            "group %s: assigned %d partition(s) (+%d, -%d)",
            self.group_id,
            len(target),
            len(added),
            len(revoked),
        )

    def _current_offsets(
        self, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, tuple[int, str]]:
        wanted = self._positions if partitions is None else partitions
        return {
            tp: (offset, "") for tp in wanted if (offset := self._positions.get(tp)) is not None
        }

    def _maybe_auto_commit(self) -> None:
        if not self.enable_auto_commit or self._membership is None:
            return
        if time.monotonic() - self._last_auto_commit < self._auto_commit_interval_s:
            return
        self._last_auto_commit = time.monotonic()
        self._commit_quietly(None)

    def _commit_quietly(self, partitions: Iterable[TopicPartition] | None) -> None:
        offsets = self._current_offsets(partitions)
        if not offsets or self._membership is None:
            return
        try:
            self._membership.commit(offsets, self.request_timeout_s)
        except RaftkaError as exc:
            log.warning("group %s: automatic commit failed: %s", self.group_id, exc)

    def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        """Store positions for the group (default: every assigned partition's position,
        i.e. after the records poll() returned). Raises CommitFailedError when the group no
        longer counts this consumer."""
        if self._membership is None:
            raise ValueError("commit() needs a consumer with a group_id and a subscription")
        if offsets is None:
            chosen = self._current_offsets()
        else:
            chosen = {TopicPartition(*tp): (offset, "") for tp, offset in offsets.items()}
        if chosen:
            self._membership.commit(chosen, self.request_timeout_s)

    def commit_async(self, offsets: dict[TopicPartition, int] | None = None) -> Future[None]:
        """commit() in the background; the future completes (or fails) with it."""
        if self._committer is None:
            self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raftka-commit")
        chosen = offsets
        if chosen is None:
            chosen = {tp: offset for tp, (offset, _) in self._current_offsets().items()}
        return self._committer.submit(self.commit, chosen)

    def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset of `tp`, or None."""
        if self._membership is None:
            raise ValueError("committed() needs a consumer with a group_id")
        offset = self._membership.committed([TopicPartition(*tp)]).get(TopicPartition(*tp), -1)
        return offset if offset >= 0 else None

    def close(self) -> None:
        """Leave cleanly: commit (with auto commit), leave the group, close connections."""
        if self._closed:
            return
        if self._membership is not None:
            if self.enable_auto_commit:
                self._commit_quietly(None)
            self._membership.close(leave=True)
        if self._committer is not None:
            self._committer.shutdown(wait=True)
        self._closed = True
        self._connections.close()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
