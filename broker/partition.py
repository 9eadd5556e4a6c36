"""One partition replica hosted by this broker: its log, its role, and the leader epoch fence.

How it works: metadata makes this replica the leader (at some leader epoch) or a follower of
another broker. Only the leader accepts produce requests and serves consumers; every batch it
appends is stamped with its leader epoch. When the metadata moves leadership elsewhere, or a
newer epoch shows up, the old leader refuses writes at once (NOT_LEADER_OR_FOLLOWER), which is
what keeps two brokers from accepting writes for the same partition in the same epoch.

Thread-safety: appends run on the log directory's writer thread; role changes and reads on
the event loop. `_lock` orders role changes against appends.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from broker.errors import (
    FencedLeaderEpochError,
    NotEnoughReplicasError,
    NotLeaderError,
    UnknownLeaderEpochError,
)
from broker.log.log import AppendResult, PartitionLog
from broker.replication.leader_state import LeaderState
from client.records import BatchHeader
from cluster.image import NO_LEADER, PartitionRegistration

NO_EPOCH = -1


@dataclass(frozen=True, slots=True)
class TopicPartition:
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
        self._lock = threading.Lock()

    # ---------------------------------------------------------------------------- roles
    @property
    def is_leader(self) -> bool:
        return self.leader_state is not None

    def apply_registration(self, registration: PartitionRegistration, now_ms: int) -> bool:
        """Take the committed registration; True when this replica became leader just now."""
        with self._lock:
            became_leader = False
            if registration.leader == self.broker_id:
                if self.leader_state is None or registration.leader_epoch != self.leader_epoch:
                    self.leader_state = LeaderState(
                        self.broker_id,
                        registration.replicas,
                        registration.isr,
                        now_ms,
                        self.log.high_watermark,
                    )
                    became_leader = True
                else:
                    self.leader_state.update_isr(registration.isr)
            else:
                self.leader_state = None
            self.leader_id = registration.leader
            self.leader_epoch = registration.leader_epoch
            self.partition_epoch = registration.partition_epoch
            self.replicas = registration.replicas
            self.isr = registration.isr
            if self.leader_state is not None:
                self._advance_high_watermark()
            return became_leader

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

    # ---------------------------------------------------------------------------- write
    def append_as_leader(
        self, data: bytearray, batches: list[tuple[int, BatchHeader]], acks: int, now_ms: int
    ) -> AppendResult:
        """Writer thread: stamp offsets and the leader epoch, append, move the HW."""
        with self._lock:
            state = self.check_leader()
            if acks == -1 and state.isr_size() < self.min_insync_replicas:
                raise NotEnoughReplicasError(
                    f"{self.tp} has {state.isr_size()} in-sync replicas "
                    f"({sorted(state.isr)}); min.insync.replicas is {self.min_insync_replicas}"
                )
            result = self.log.append_as_leader(data, batches, self.leader_epoch, now_ms)
            self._advance_high_watermark()
            return result

    def _advance_high_watermark(self) -> bool:
        assert self.leader_state is not None
        hw = self.leader_state.compute_high_watermark(self.log.log_end_offset)
        return self.log.update_high_watermark(hw)

    def record_follower_fetch(self, replica_id: int, fetch_offset: int, now_ms: int) -> bool:
        """A follower fetched from `fetch_offset`: note its position; True if the HW moved."""
        with self._lock:
            state = self.leader_state
            if state is None:
                return False
            state.record_fetch(replica_id, fetch_offset, self.log.log_end_offset, now_ms)
            return self._advance_high_watermark()

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
