"""One partition replica hosted by this broker: its log, its role, and the leader epoch fence.

How it works: metadata makes this replica the leader (at some leader epoch) or a follower of
another broker. Only the leader accepts produce requests and serves consumers; every batch it
appends is stamped with its leader epoch, and the epoch's start offset is recorded when it
takes over. When the metadata moves leadership elsewhere, or a newer epoch shows up, the old
leader refuses writes at once (NOT_LEADER_OR_FOLLOWER), which is what keeps two brokers from
accepting writes for the same partition in the same epoch. A follower appends the leader's
batches as they are and truncates what diverged.

Thread-safety: every mutation (role change, append, truncation) runs on the log directory's
writer thread; reads of positions come from the event loop. `_lock` orders the two.
"""

from __future__ import annotations

import logging
import threading
from typing import NamedTuple

from raftka.broker.errors import (
    DuplicateSequenceError,
    FencedLeaderEpochError,
    InvalidProducerEpochError,
    NotEnoughReplicasError,
    NotLeaderError,
    OutOfOrderSequenceError,
    UnknownLeaderEpochError,
)
from raftka.broker.log.log import AppendResult, PartitionLog
from raftka.broker.producer_state import (
    OutOfOrderSequenceError as SequenceGap,
)
from raftka.broker.producer_state import (
    ProducerFencedError,
    ProducerStateManager,
    StoredBatch,
)
from raftka.broker.replication.leader_state import LeaderState
from raftka.cluster.image import NO_LEADER, PartitionRegistration
from raftka.records import BatchHeader, iter_headers, read_header

log = logging.getLogger("raftka.broker")
NO_EPOCH = -1


class TopicPartition(NamedTuple):
    """A partition's name. A tuple, so that hashing and comparing it, done for every
    partition of every fetch round as a key of the broker's dicts, are C calls: as a frozen
    dataclass both ran Python code, 106 ns per dict lookup against 30 (BENCHMARKS.md)."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}-{self.partition}"


class Partition:
    def __init__(
        self,
        tp: TopicPartition,
        topic_id: str,
        log: PartitionLog,
        broker_id: int,
        min_insync_replicas: int,
    ) -> None:
        self.tp = tp
        self.topic_id = topic_id
        self.log = log
        self.broker_id = broker_id
        self.min_insync_replicas = min_insync_replicas
        self.leader_id = NO_LEADER
        self.leader_epoch = NO_EPOCH
        self.partition_epoch = NO_EPOCH
        self.replicas: tuple[int, ...] = ()
        self.isr: tuple[int, ...] = ()
        self.leader_state: LeaderState | None = None
        self.producers = ProducerStateManager()
        self._lock = threading.Lock()

    # ---------------------------------------------------------------------------- roles
    @property
    def is_leader(self) -> bool:
        return self.leader_state is not None

    def appends_keep_the_epoch(self) -> bool:
        """Whether an append now leaves the log's leader-epoch cache as it is. A batch that
        starts a new epoch stores the cache with an fsync first; the epoch the log has last
        written equals the current leader epoch once this broker has led (assign_epoch on
        becoming leader) or followed (the new leader's first batch) in it, and batches never
        carry a newer epoch than the fetch or produce was fenced on. What decides whether an
        append may skip the writer thread (log_writer.py, run_small)."""
        return self.log.last_batch_epoch() == self.leader_epoch

    def rebuild_producer_state(self) -> None:
        """Writer thread: replay stored batch headers (on open and after truncation)."""
        producers = ProducerStateManager()
        for header in self.log.iter_batch_headers():
            producers.update(header)
        self.producers = producers

    def apply_registration(self, registration: PartitionRegistration, now_ms: int) -> str:
        """Writer thread: take the committed registration. Returns what changed:
        "leader" (became leader), "follower" (follows a new leader or epoch), or ""."""
        with self._lock:
            change = ""
            if registration.leader == self.broker_id:
                if self.leader_state is None or registration.leader_epoch != self.leader_epoch:
                    start = self.log.log_end_offset
                    self.log.assign_epoch(registration.leader_epoch, start)
                    self.leader_state = LeaderState(
                        self.broker_id,
                        registration.replicas,
                        registration.isr,
                        now_ms,
                        self.log.high_watermark,
                        start,
                    )
                    change = "leader"
                else:
                    self.leader_state.update_isr(registration.isr)
            else:
                if (
                    self.leader_state is not None
                    or registration.leader != self.leader_id
                    or registration.leader_epoch != self.leader_epoch
                ):
                    change = "follower"
                self.leader_state = None
            self.leader_id = registration.leader
            self.leader_epoch = registration.leader_epoch
            self.partition_epoch = registration.partition_epoch
            self.replicas = registration.replicas
            self.isr = registration.isr
            if self.leader_state is not None:
                self._advance_high_watermark()
            return change

    def check_leader(self, requested_epoch: int = NO_EPOCH) -> LeaderState:
        state = self.leader_state
        if state is None:
            raise NotLeaderError(
                f"broker {self.broker_id} is not the leader of {self.tp}; "
                f"the leader is {self.leader_id}",
                self.leader_id,
                self.leader_epoch,
            )
        self.check_epoch(requested_epoch)
        return state

    def check_epoch(self, requested_epoch: int) -> None:
        if requested_epoch == NO_EPOCH:
            return
        if requested_epoch < self.leader_epoch:
            raise FencedLeaderEpochError(
                f"leader epoch {requested_epoch} of {self.tp} is stale; current is "
                f"{self.leader_epoch}"
            )
        if requested_epoch > self.leader_epoch:
            raise UnknownLeaderEpochError(
                f"leader epoch {requested_epoch} of {self.tp} is newer than this broker knows "
                f"({self.leader_epoch})"
            )

    # ----------------------------------------------------------------------- leader write
    def append_as_leader(
        self, data: bytearray, batches: list[tuple[int, BatchHeader]], acks: int, now_ms: int
    ) -> AppendResult:
        """Writer thread (or the event loop while it is idle: log_writer.py): stamp offsets
        and the leader epoch, append, move the HW.

        An idempotent batch the partition already stored raises DuplicateSequenceError
        carrying the stored offsets; nothing is written twice.
        """
        with self._lock:
            state = self.check_leader()
            if acks == -1 and state.isr_size() < self.min_insync_replicas:
                raise NotEnoughReplicasError(
                    f"{self.tp} has {state.isr_size()} in-sync replicas "
                    f"({sorted(state.isr)}); min.insync.replicas is {self.min_insync_replicas}"
                )
            self._check_sequences(batches)
            result = self.log.append_as_leader(data, batches, self.leader_epoch, now_ms)
            for position, _ in batches:
                self.producers.update(read_header(data, position))
            self._advance_high_watermark()
            return result

    def _check_sequences(self, batches: list[tuple[int, BatchHeader]]) -> None:
        for _, header in batches:
            try:
                stored = self.producers.check(header)
            except ProducerFencedError as exc:
                raise InvalidProducerEpochError(f"{self.tp}: {exc}") from None
            except SequenceGap as exc:
                raise OutOfOrderSequenceError(f"{self.tp}: {exc}") from None
            if stored is not None:
                raise DuplicateSequenceError(
                    f"{self.tp}: batch already stored at offset {stored.first_offset}", stored
                )

    def _advance_high_watermark(self) -> bool:
        state = self.leader_state
        assert state is not None
        log = self.log
        end = log.log_end_offset
        if state.high_watermark == end == log.high_watermark:
            # At the log end already, so nothing can move it (compute_high_watermark never
            # goes past the end nor back, and the log start is at most the end): the state
            # of every quiet, fully replicated partition at each of its followers' fetches,
            # where the general path took its lock and walked the ISR for nothing.
            return False
        return log.update_high_watermark(state.compute_high_watermark(end))

    def record_follower_fetch(self, replica_id: int, fetch_offset: int, now_ms: int) -> bool:
        """A follower fetched from `fetch_offset`: note its position; True if the HW moved."""
        with self._lock:
            state = self.leader_state
            if state is None:
                return False
            state.record_fetch(replica_id, fetch_offset, self.log.log_end_offset, now_ms)
            return self._advance_high_watermark()

    # --------------------------------------------------------------------- follower write
    def append_as_follower(
        self, data: bytes, leader_high_watermark: int, now_ms: int
    ) -> AppendResult | None:
        """Writer thread (or the event loop while it is idle: log_writer.py): append batches
        copied from the leader, then take its HW."""
        with self._lock:
            if self.leader_state is not None:
                raise NotLeaderError(
                    f"{self.tp}: this broker leads it now", self.broker_id, self.leader_epoch
                )
            result = self.log.append_as_follower(data, now_ms) if data else None
            if result is not None:
                for _, header in iter_headers(data):
                    self.producers.update(header)
            self.log.update_high_watermark(min(leader_high_watermark, self.log.log_end_offset))
            return result

    def truncate_to(self, offset: int) -> int:
        """Writer thread: drop the divergent tail; returns the new log end offset."""
        with self._lock:
            end = self.log.truncate_to(offset)
            self.rebuild_producer_state()
            return end

    def start_over_at(self, offset: int) -> None:
        """Writer thread: empty the log and continue from `offset` (the leader's start)."""
        with self._lock:
            self.log.truncate_fully_and_start_at(offset)
            self.producers.clear()

    # ----------------------------------------------------------------------------- read
    @property
    def high_watermark(self) -> int:
        return self.log.high_watermark

    @property
    def log_end_offset(self) -> int:
        return self.log.log_end_offset

    @property
    def log_start_offset(self) -> int:
        return self.log.log_start_offset


__all__ = ["NO_EPOCH", "Partition", "StoredBatch", "TopicPartition"]
