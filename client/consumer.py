"""Consumer: reads partitions in offset order from their leaders.

How it works: each assigned partition has a position (the next offset to read). `poll()`
has the Fetcher (client/fetcher.py) send one Fetch per leader broker for the partitions it
leads (long-polling up to `fetch_max_wait_ms`) and decode the batches, then hands out the
buffered records and advances the positions, which SubscriptionState (client/subscription.py)
keeps. A partition without a position starts at the earliest or latest offset
(`auto_offset_reset`, the seed notes' fromBeginning). Leader changes and unreachable brokers
refresh the metadata and retry. With a group id, GroupMembership (client/group_member.py)
says which partitions this consumer reads and stores its commits.

This module is the public face only — the API and its orchestration (polling loop, group
rebalances, commits); the bookkeeping and the network live in the two modules above so each
can be read, and the bookkeeping tested, on its own.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from raftka.client.credentials import resolve as resolve_credentials
from raftka.client.errors import RaftkaError
from raftka.client.fetcher import ConsumerRecord, Fetcher
from raftka.client.group_member import CommitFailedError, GroupMembership
from raftka.client.metadata import ClusterMetadata
from raftka.client.serialization import Deserializer, resolve_deserializer
from raftka.client.subscription import EARLIEST, LATEST, SubscriptionState
from raftka.client.tls_options import TlsOptions
from raftka.client.transport import Connections, bootstrap_list
from raftka.client.types import TopicPartition

__all__ = [
    "EARLIEST",
    "LATEST",
    "CommitFailedError",
    "Consumer",
    "ConsumerRecord",
    "TopicPartition",
]

log = logging.getLogger("raftka.client")


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
        tls: TlsOptions | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._state: SubscriptionState[ConsumerRecord] = SubscriptionState(auto_offset_reset)
        self.client_id = client_id
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.max_poll_records = max_poll_records
        self.consumer_timeout_ms = consumer_timeout_ms
        self._connections = Connections(tls, resolve_credentials(username, password))
        self.metadata = ClusterMetadata(
            bootstrap_list(bootstrap_servers), self._connections, request_timeout_ms / 1000
        )
        self._fetcher = Fetcher(
            self._state,
            self._connections,
            self.metadata,
            key_deserializer=resolve_deserializer(key_deserializer),
            value_deserializer=resolve_deserializer(value_deserializer),
            fetch_min_bytes=fetch_min_bytes,
            fetch_max_bytes=fetch_max_bytes,
            max_partition_fetch_bytes=max_partition_fetch_bytes,
            request_timeout_s=request_timeout_ms / 1000,
        )
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

    # Settings that the state and the fetcher read, kept readable and writable here.
    @property
    def auto_offset_reset(self) -> str:
        return self._state.auto_offset_reset

    @auto_offset_reset.setter
    def auto_offset_reset(self, value: str) -> None:
        self._state.auto_offset_reset = value

    @property
    def fetch_min_bytes(self) -> int:
        return self._fetcher.fetch_min_bytes

    @fetch_min_bytes.setter
    def fetch_min_bytes(self, value: int) -> None:
        self._fetcher.fetch_min_bytes = value

    @property
    def fetch_max_bytes(self) -> int:
        return self._fetcher.fetch_max_bytes

    @fetch_max_bytes.setter
    def fetch_max_bytes(self, value: int) -> None:
        self._fetcher.fetch_max_bytes = value

    @property
    def max_partition_fetch_bytes(self) -> int:
        return self._fetcher.max_partition_fetch_bytes

    @max_partition_fetch_bytes.setter
    def max_partition_fetch_bytes(self, value: int) -> None:
        self._fetcher.max_partition_fetch_bytes = value

    @property
    def request_timeout_s(self) -> float:
        return self._fetcher.request_timeout_s

    @request_timeout_s.setter
    def request_timeout_s(self, value: float) -> None:
        self._fetcher.request_timeout_s = value

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
        self._state.subscribe(topics or [])
        if self.group_id is None:
            if pattern:
                self.metadata.refresh()
                regex = re.compile(pattern)
                matching = [t for t in self.metadata.topics if regex.fullmatch(t)]
                self._state.subscribe(self._state.topics + matching)
            self._assign_subscription()
            return
        if self._membership is not None:
            self._membership.close(leave=True)
        self._state.assign_from_subscription([])
        self._membership = GroupMembership(
            self.group_id,
            self._state.topics,
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
        for topic in self._state.topics:
            infos = self.metadata.ensure_topic(topic, allow_auto_create=False)
            wanted.extend(TopicPartition(topic, i.partition) for i in infos)
        self._state.assign_from_subscription(wanted)

    def assign(self, partitions: Iterable[TopicPartition | tuple[str, int]]) -> None:
        """Read exactly these partitions (manual assignment; no group membership)."""
        if self._membership is not None:
            self._membership.close(leave=True)
            self._membership = None
        self._state.assign_from_user([TopicPartition(*tp) for tp in partitions])

    def assignment(self) -> set[TopicPartition]:
        return self._state.assignment()

    def pause(self, *partitions: TopicPartition) -> None:
        self._state.pause(*partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._state.resume(*partitions)

    # -------------------------------------------------------------------- positions
    def seek(self, tp: TopicPartition, offset: int) -> None:
        tp = TopicPartition(*tp)
        if not self._state.is_assigned(tp):
            raise ValueError(f"{tp.topic}-{tp.partition} is not assigned to this consumer")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self._state.seek(tp, offset)

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self._seek_to(partitions or tuple(self._state.assigned()), EARLIEST)

    def seek_to_end(self, *partitions: TopicPartition) -> None:
        self._seek_to(partitions or tuple(self._state.assigned()), LATEST)

    def _seek_to(self, partitions: Iterable[TopicPartition], spec: int) -> None:
        offsets = self._fetcher.list_offsets([TopicPartition(*tp) for tp in partitions], spec)
        for tp, offset in offsets.items():
            self._state.seek(tp, offset)

    def position(self, tp: TopicPartition) -> int:
        tp = TopicPartition(*tp)
        if self._state.position(tp) is None:
            self._fetcher.reset_positions([tp])
        position = self._state.position(tp)
        assert position is not None
        return position

    def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return self._fetcher.list_offsets([TopicPartition(*tp) for tp in partitions], EARLIEST)

    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return self._fetcher.list_offsets([TopicPartition(*tp) for tp in partitions], LATEST)

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
        while not self._state.has_buffered():
            self._sync_group()
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            self._fetcher.fetch_once(max(0, min(remaining_ms, self.fetch_max_wait_ms)))
            if self._state.has_buffered() or time.monotonic() >= deadline:
                break
        records = self._state.drain(limit)
        if records:
            self._fetcher.send_ahead(self.fetch_max_wait_ms)
        return records

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
        current = self._state.assignment()
        revoked = sorted(current - target)
        added = sorted(target - current)
        if revoked:
            if self.enable_auto_commit:
                self._commit_quietly(revoked)
            if self._on_revoke is not None:
                self._on_revoke(revoked)
        self._state.assign_from_subscription(sorted(target))
        if added:
            for tp, offset in membership.committed(added).items():
                if offset >= 0 and self._state.is_assigned(tp):
                    self._state.seek(tp, offset)
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
        return {tp: (offset, "") for tp, offset in self._state.consumed_offsets(partitions).items()}

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
