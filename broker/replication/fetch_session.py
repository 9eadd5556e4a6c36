"""Fetch sessions on the replication stream (Kafka's KIP-227, with the connection as the
session). Pure: both sides' bookkeeping, no I/O.

Why: without a session a follower names, in every fetch round, every partition it follows on
that leader, and the leader answers every one of them — at 1,000 partitions per leader that is
thousands of protobuf messages built, sent, parsed and walked per round on both brokers, for
rounds in which a handful of partitions have anything new (BENCHMARKS.md: at 3,000 partitions
the leader's `_read_all` and the followers' rounds were a third of the brokers' CPU).

With a session the leader remembers, per connection, what the follower last said about each
partition (`LeaderFetchSession`), and a request names only what changed since
(`FollowerFetchSession`): partitions whose fetch offset, current leader epoch or last fetched
epoch moved, new ones, and, as `forgotten`, the ones no longer followed there. The leader still
fetches *every* partition of the session in every round — the same checks, the same
recorded follower positions, so the ISR and the high watermark move exactly as before — but
answers only the partitions with news: records, an error, divergence, a high watermark or log
start other than the one last answered on this connection; and always those the request
named, so a follower that asks again gets an answer.

So that a quiet partition costs the leader little per round, the pass remembers what it saw
when a partition was caught up with nothing to send (QuietSnapshot); while nothing of it
has changed, the next pass records the follower's fetch and compares the high watermark,
and skips the checks whose answers cannot have changed.

The session lives and dies with the connection: anything that closes it (an error, a timeout,
a cancelled long poll, either broker restarting) starts the next connection with a request that
names everything. A leader that does not keep sessions leaves FetchResponse.session unset;
the follower then names every partition in every request on that connection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from raftka.broker.partition import Partition, TopicPartition
from raftka.broker.replication.leader_state import LeaderState
from raftka.proto.raftka.v1 import broker_pb2

# A session may hold at most this many partitions (the follower follows at most this many on
# one leader); past it the leader closes the connection. Far above what the file-descriptor
# budget lets a broker host, and still a bound on what one peer can make the leader keep.
SESSION_MAX_PARTITIONS = 200_000
# What a follower's fetch position is made of: fetch offset, current leader epoch, last
# fetched epoch. A change in any of them is news the leader must hear.
Position = tuple[int, int, int]
_NEVER = (-2, -2)


class SessionError(ValueError):
    """A request this session cannot take; the message says why (the connection closes)."""


@dataclass(slots=True)
class _Entry:
    asked: broker_pb2.FetchPartition
    # (high watermark, log start) last answered on this connection; _NEVER until answered
    # since the follower last named the partition.
    answered: tuple[int, int] = _NEVER
    # Set by the leader's fetch when its last pass found the follower caught up and nothing
    # to send (see LeaderFetchSession.remember); None otherwise.
    quiet_at: QuietSnapshot | None = None


@dataclass(frozen=True, slots=True)
class QuietSnapshot:
    """What a caught-up, record-less pass over a partition saw. While the hosted partition
    object, its leadership (the LeaderState object: a new leader epoch makes a new one),
    its log end and log start are all still these, and the follower named nothing new,
    every check of the next pass would come out the same (the leader's epoch cache, the
    divergence answer and the read at the log end change only with those), so the pass only
    records the follower's fetch (the ISR's clock and the high watermark) and compares the
    high watermark with the one last told."""

    partition: Partition
    leader_state: LeaderState | None
    log_end_offset: int
    log_start_offset: int


class LeaderFetchSession:
    """The leader's side: what one connection's follower asked for, and what it was told."""

    def __init__(self, max_partitions: int = SESSION_MAX_PARTITIONS) -> None:
        if max_partitions <= 0:
            raise ValueError(f"max_partitions must be positive, got {max_partitions}")
        self._max_partitions = max_partitions
        self._entries: dict[TopicPartition, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def apply(
        self, request: broker_pb2.FetchRequest
    ) -> tuple[list[broker_pb2.FetchPartition], list[TopicPartition]]:
        """Take a request's changes; every partition of the session now (what to fetch this
        round) and their keys, in the order they joined."""
        entries = self._entries
        for gone in request.forgotten:
            entries.pop(TopicPartition(gone.topic, gone.partition), None)
        for asked in request.partitions:
            # named: (re)start with what it says, and answer it this round whatever it holds
            entries[TopicPartition(asked.topic, asked.partition)] = _Entry(asked)
        if len(entries) > self._max_partitions:
            raise SessionError(
                f"a fetch session of {len(entries)} partitions; at most "
                f"{self._max_partitions} are allowed")
        return [entry.asked for entry in entries.values()], list(entries)

    def quiet(self, tp: TopicPartition, high_watermark: int, log_start_offset: int) -> bool:
        """Whether a partition's error-free, record-less answer would tell the follower
        nothing it was not told on this connection already."""
        return self._entries[tp].answered == (high_watermark, log_start_offset)

    def told(self, answers: list[tuple[TopicPartition, int, int]]) -> None:
        """The response with these record-less answers (partition, high watermark, log
        start) goes to the follower: they count as told. Only for the response sent — a
        long poll that reads again after its wait throws the earlier pass's answers away,
        and counting those as told lost a high watermark for good."""
        entries = self._entries
        for tp, high_watermark, log_start_offset in answers:
            entry = entries.get(tp)
            if entry is not None:
                entry.answered = (high_watermark, log_start_offset)

    def answered(self, tp: TopicPartition) -> None:
        """The partition was answered with something else (records, an error, divergence):
        its next record-less answer is sent again, whatever it holds."""
        entry = self._entries[tp]
        entry.answered = _NEVER
        entry.quiet_at = None

    def remember(self, tp: TopicPartition, snapshot: QuietSnapshot | None) -> None:
        """What the last pass over the partition saw, when it was caught up and quiet
        (None: it was not, and the next pass checks everything)."""
        self._entries[tp].quiet_at = snapshot

    def quiet_snapshot(self, tp: TopicPartition) -> QuietSnapshot | None:
        return self._entries[tp].quiet_at


class FollowerFetchSession:
    """The follower's side: what this connection last named per partition, so a request
    names only what changed. `reset` when the connection is new (nothing named yet)."""

    def __init__(self) -> None:
        self._named: dict[TopicPartition, Position] = {}
        self._again: set[TopicPartition] = set()
        self.supported = True  # until a leader answers without keeping the session

    def reset(self) -> None:
        self._named.clear()
        self._again.clear()
        self.supported = True

    def changes(
        self, positions: Mapping[TopicPartition, Position]
    ) -> tuple[list[TopicPartition], list[TopicPartition]]:
        """(partitions to name, partitions to forget) for a request about `positions`, every
        partition followed on this leader now; noted as sent (a failed exchange closes the
        connection, and `reset` starts over)."""
        named = self._named
        again = self._again
        if not self.supported:
            named.clear()
            again.clear()
            return list(positions), []
        changed = [tp for tp, position in positions.items()
                   if tp in again or named.get(tp) != position]
        forgotten = [tp for tp in named if tp not in positions]
        for tp in forgotten:
            del named[tp]
        for tp in changed:
            named[tp] = positions[tp]
        again.clear()
        return changed, forgotten

    def ask_again(self, tps: Iterable[TopicPartition]) -> None:
        """Name these in the next request even if unchanged: their last answer was not taken
        (an error waited out, an append that failed), and naming is what makes the leader
        answer a partition whatever its news."""
        self._again.update(tps)

    def answered(self, response: broker_pb2.FetchResponse) -> None:
        """A response arrived: a leader that did not keep the session gets full requests
        from now on (on this connection)."""
        if not response.session:
            self.supported = False
