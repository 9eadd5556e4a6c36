"""What a partition leader knows about its replicas: positions, ISR, high watermark. Pure.

How it works (Kafka's pull model): followers fetch from the leader with the offset they want
next, which is their log end offset; the leader records it. A follower is "caught up" at a
fetch whose offset reaches the leader's log end offset at that moment. The high watermark is
the smallest log end offset over the ISR (the leader's own included): every record below it is
on every in-sync replica. A follower not caught up for `replica_lag_time_max_ms` should leave
the ISR; one outside the ISR whose log end offset reached the high watermark may rejoin. The
leader proposes those changes to the controller; the ISR changes only when the controller's
record arrives (`update_isr`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

UNKNOWN_OFFSET = -1


@dataclass(slots=True)
class ReplicaProgress:
    log_end_offset: int = UNKNOWN_OFFSET
    last_caught_up_ms: int = 0
    last_fetch_ms: int = 0


class LeaderState:
    # Invariant: the leader itself is always a member of isr.
    # Invariant: high_watermark never decreases while this object lives.
    def __init__(
        self,
        local_id: int,
        replicas: Iterable[int],
        isr: Iterable[int],
        now_ms: int,
        high_watermark: int,
    ) -> None:
        self.local_id = local_id
        self.replicas = tuple(replicas)
        self.isr = frozenset(isr) | {local_id}
        self.high_watermark = high_watermark
        # A new leader grants every follower a full lag period before judging it.
        self._followers = {
            r: ReplicaProgress(last_caught_up_ms=now_ms, last_fetch_ms=now_ms)
            for r in self.replicas
            if r != local_id
        }

    def follower(self, replica_id: int) -> ReplicaProgress | None:
        return self._followers.get(replica_id)

    def update_isr(self, isr: Iterable[int]) -> None:
        self.isr = frozenset(isr) | {self.local_id}

    def record_fetch(
        self, replica_id: int, fetch_offset: int, leader_end_offset: int, now_ms: int
    ) -> None:
        progress = self._followers.get(replica_id)
        if progress is None:
            return
        progress.log_end_offset = fetch_offset
        progress.last_fetch_ms = now_ms
        if fetch_offset >= leader_end_offset:
            progress.last_caught_up_ms = now_ms

    def compute_high_watermark(self, leader_end_offset: int) -> int:
        """Smallest log end offset over the ISR; never lower than before."""
        candidate = leader_end_offset
        for replica_id in self.isr:
            if replica_id == self.local_id:
                continue
            progress = self._followers.get(replica_id)
            offset = progress.log_end_offset if progress else UNKNOWN_OFFSET
            candidate = min(candidate, max(offset, 0) if offset != UNKNOWN_OFFSET else 0)
        if candidate > self.high_watermark:
            self.high_watermark = candidate
        return self.high_watermark

    def lagging_followers(self, now_ms: int, lag_max_ms: int) -> set[int]:
        """ISR members that have not caught up within lag_max_ms: propose removing them."""
        return {
            r
            for r in self.isr
            if r != self.local_id and now_ms - self._followers[r].last_caught_up_ms > lag_max_ms
        }

    def caught_up_followers(self) -> set[int]:
        """Replicas outside the ISR whose log end offset reached the high watermark."""
        return {
            r
            for r, progress in self._followers.items()
            if r not in self.isr and progress.log_end_offset >= self.high_watermark
        }

    def isr_size(self) -> int:
        return len(self.isr)
