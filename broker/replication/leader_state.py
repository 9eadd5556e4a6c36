"""What a partition leader knows about its replicas: positions, ISR, high watermark. Pure.

How it works (Kafka's pull model): followers fetch from the leader with the offset they want
next, which is their log end offset; the leader records it. A follower is "caught up" at a
fetch whose offset reaches the leader's log end offset at that moment, or the end offset the
leader had at the follower's previous fetch (so a follower keeping pace with a steady stream
of writes counts as caught up). The high watermark is the smallest log end offset over the
ISR (the leader's own included): every record below it is on every in-sync replica.

ISR changes go through the controller. A follower not caught up for `replica_lag_time_max_ms`
should leave the ISR; one outside it that has every committed record and everything of the
current leader epoch may rejoin. While a change is in flight the high watermark is computed
over the *maximal* ISR (committed members plus any being added), so it cannot move past a
joining follower before the controller has made it a member (Kafka's KIP-497).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

UNKNOWN_OFFSET = -1


@dataclass(slots=True)
class ReplicaProgress:
    log_end_offset: int = UNKNOWN_OFFSET
    last_caught_up_ms: int = 0
    last_fetch_ms: int = 0
    # The leader's log end offset at this follower's previous fetch.
    leader_end_offset_at_last_fetch: int = UNKNOWN_OFFSET


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
        epoch_start_offset: int,
    ) -> None:
        self.local_id = local_id
        self.replicas = tuple(replicas)
        self.isr = frozenset(isr) | {local_id}
        self.high_watermark = high_watermark
        # First offset written in this leader epoch: a follower must have it to rejoin.
        self.epoch_start_offset = epoch_start_offset
        self.pending_isr: frozenset[int] | None = None
        # A new leader grants every follower a full lag period before judging it.
        self._followers = {
            r: ReplicaProgress(last_caught_up_ms=now_ms, last_fetch_ms=now_ms)
            for r in self.replicas
            if r != local_id
        }

    def follower(self, replica_id: int) -> ReplicaProgress | None:
        return self._followers.get(replica_id)

    def is_replica(self, replica_id: int) -> bool:
        return replica_id in self._followers

    @property
    def maximal_isr(self) -> frozenset[int]:
        # No new set when nothing is pending (the common case): the high watermark is
        # computed over this at every follower fetch of every partition.
        pending = self.pending_isr
        return self.isr if pending is None else self.isr | pending

    def update_isr(self, isr: Iterable[int]) -> None:
        """The controller committed an ISR: it replaces any pending proposal."""
        self.isr = frozenset(isr) | {self.local_id}
        self.pending_isr = None

    def record_fetch(
        self, replica_id: int, fetch_offset: int, leader_end_offset: int, now_ms: int
    ) -> None:
        progress = self._followers.get(replica_id)
        if progress is None:
            return
        if fetch_offset >= leader_end_offset:
            progress.last_caught_up_ms = now_ms
        elif fetch_offset >= progress.leader_end_offset_at_last_fetch >= 0:
            progress.last_caught_up_ms = max(progress.last_caught_up_ms, progress.last_fetch_ms)
        progress.log_end_offset = fetch_offset
        progress.last_fetch_ms = now_ms
        progress.leader_end_offset_at_last_fetch = leader_end_offset

    def compute_high_watermark(self, leader_end_offset: int) -> int:
        """Smallest log end offset over the maximal ISR; never lower than before."""
        candidate = leader_end_offset
        for replica_id in self.maximal_isr:
            if replica_id == self.local_id:
                continue
            progress = self._followers.get(replica_id)
            offset = progress.log_end_offset if progress else UNKNOWN_OFFSET
            candidate = min(candidate, max(offset, 0))
        if candidate > self.high_watermark:
            self.high_watermark = candidate
        return self.high_watermark

    def lagging_followers(self, now_ms: int, lag_max_ms: int) -> set[int]:
        """ISR members that have not caught up within lag_max_ms."""
        return {
            r
            for r in self.isr
            if r != self.local_id
            and r in self._followers
            and now_ms - self._followers[r].last_caught_up_ms > lag_max_ms
        }

    def caught_up_followers(
        self, now_ms: int | None = None, lag_max_ms: int | None = None
    ) -> set[int]:
        """Replicas outside the ISR with every committed record and this epoch's start, and
        (given `now_ms`) caught up within `lag_max_ms`: on an idle partition a follower
        that stopped fetching still "has" every record (0 >= 0), and letting it back in
        only to shrink it out again on the next round made every ISR flap."""
        threshold = max(self.high_watermark, self.epoch_start_offset)
        return {
            r
            for r, progress in self._followers.items()
            if r not in self.isr
            and progress.log_end_offset >= threshold
            and (now_ms is None or lag_max_ms is None
                 or now_ms - progress.last_caught_up_ms <= lag_max_ms)
        }

    def proposed_isr(
        self, now_ms: int, lag_max_ms: int, eligible: Callable[[int], bool] | None = None
    ) -> frozenset[int] | None:
        """The ISR to ask the controller for, or None when none is due (or one is pending).
        `eligible` says which brokers may join (unfenced in this broker's metadata): the
        controller refuses the others, and asking again every round is wasted work."""
        if self.pending_isr is not None:
            return None
        if self.isr.issuperset(self._followers):
            # Every replica is in the ISR (the steady state, asked of every led partition
            # every ISR round): nobody can join, so only a lagging one makes a change.
            lag_deadline_ms = now_ms - lag_max_ms
            if all(progress.last_caught_up_ms >= lag_deadline_ms
                   for progress in self._followers.values()):
                return None
        lagging = self.lagging_followers(now_ms, lag_max_ms)
        joining = self.caught_up_followers(now_ms, lag_max_ms)
        if eligible is not None:
            joining = {r for r in joining if eligible(r)}
        if not lagging and not joining:
            return None
        return (self.isr - lagging) | joining

    def isr_size(self) -> int:
        return len(self.isr)
