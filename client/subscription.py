"""Subscription state: what a Consumer reads and where it stands in each partition, no I/O.

Split out of the Consumer, as Kafka's Java client keeps SubscriptionState apart from its
Fetcher, so that the bookkeeping — subscribed topics, assigned and paused partitions, the
offsets to hand out and to fetch next, partitions waiting for an offset reset, records fetched
but not yet returned — lives in one place whose rules can be tested in microseconds without a
broker. It imports no grpc, clock or thread: the Fetcher (client/fetcher.py) does the network
around it, and the Consumer (client/consumer.py) composes both behind its public API.

Each assigned partition has two offsets. Its *position* is the next offset poll() hands out
(what Consumer.position() reports, as in Kafka); its *fetch position* is the next offset to
fetch. Records in between wait in the buffer, in the order they were fetched. A partition
without a position waits for a reset to its earliest or latest offset (auto_offset_reset).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Generic, Protocol, TypeVar

from raftka.client.errors import OffsetOutOfRangeError
from raftka.client.types import TopicPartition

# ListOffsets timestamp specs: the log start offset and the high watermark.
EARLIEST = -2
LATEST = -1
RESET_POLICIES = ("earliest", "latest", "none")


class Offsetted(Protocol):
    """All the state needs to know about a buffered record: its offset."""

    @property
    def offset(self) -> int: ...


R = TypeVar("R", bound=Offsetted)


class SubscriptionState(Generic[R]):
    """Assignment, positions, pauses and the buffer of fetched records of one consumer."""

    def __init__(self, auto_offset_reset: str = "latest") -> None:
        if auto_offset_reset not in RESET_POLICIES:
            raise ValueError("auto_offset_reset must be 'earliest', 'latest' or 'none'")
        self.auto_offset_reset = auto_offset_reset
        self._topics: list[str] = []
        # Assignment order is kept: fetches and seek_to_*() go through partitions in it.
        self._positions: dict[TopicPartition, int | None] = {}
        self._fetch_positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        # Fetched records in fetch order, a chunk (one fetched batch, say) per entry:
        # [partition, records, index of the next record to hand out]. Chunks rather than
        # records so that buffering and handing out cost per batch, not per record, and a
        # chunk may decode itself only when it is handed out (see fetcher.LazyBatch).
        self._buffer: deque[list[object]] = deque()

    # ---------------------------------------------------------------- subscription
    def subscribe(self, topics: Iterable[str]) -> None:
        """Remember the topics subscribed to (their partitions are assigned separately)."""
        self._topics = list(topics)

    @property
    def topics(self) -> list[str]:
        return list(self._topics)

    # ------------------------------------------------------------------ assignment
    def assign_from_user(self, partitions: Iterable[TopicPartition]) -> None:
        """Manual assignment: exactly these partitions, and no topic subscription."""
        self._topics = []
        self._assign(partitions)

    def assign_from_subscription(self, partitions: Iterable[TopicPartition]) -> None:
        """The partitions of the subscribed topics (all of them, or the group's share)."""
        self._assign(partitions)

    def _assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions kept keep their positions and buffered records; the rest are dropped.
        New ones start without a position."""
        self._positions = {tp: self._positions.get(tp) for tp in partitions}
        self._fetch_positions = {
            tp: offset for tp, offset in self._fetch_positions.items() if tp in self._positions
        }
        self._buffer = deque(item for item in self._buffer if item[0] in self._positions)

    def assigned(self) -> list[TopicPartition]:
        """The assigned partitions, in assignment order."""
        return list(self._positions)

    def assignment(self) -> set[TopicPartition]:
        return set(self._positions)

    def is_assigned(self, tp: TopicPartition) -> bool:
        return tp in self._positions

    # ---------------------------------------------------------------------- pauses
    def pause(self, *partitions: TopicPartition) -> None:
        """Stop fetching these partitions (assigned or not: a pause outlives reassignment)."""
        self._paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._paused.difference_update(partitions)

    def is_paused(self, tp: TopicPartition) -> bool:
        return tp in self._paused

    def fetchable(self) -> list[TopicPartition]:
        """Assigned partitions not paused, in assignment order."""
        return [tp for tp in self._positions if tp not in self._paused]

    # ------------------------------------------------------------------- positions
    def position(self, tp: TopicPartition) -> int | None:
        """The next offset poll() hands out for `tp`; None until it has one."""
        return self._positions.get(tp)

    def next_fetch_offset(self, tp: TopicPartition) -> int | None:
        """The offset the next fetch of `tp` starts at; None when `tp` is not being fetched
        (not assigned, or waiting for a reset), so a late fetch reply for it is ignored."""
        if self._positions.get(tp) is None:
            return None
        return self._fetch_positions.get(tp)

    def fetch_offsets(self) -> dict[TopicPartition, int]:
        """Fetchable partitions that have a position, with the offset to fetch from."""
        return {
            tp: offset
            for tp in self.fetchable()
            if (offset := self.next_fetch_offset(tp)) is not None
        }

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Hand out and fetch from `offset` next, dropping records buffered for `tp`.

        A partition not assigned becomes assigned: Consumer.position() and seek_to_*() on
        one have always started reading it (Kafka refuses instead)."""
        self._positions[tp] = offset
        self._fetch_positions[tp] = offset
        self._buffer = deque(item for item in self._buffer if item[0] != tp)

    def needing_reset(self) -> list[TopicPartition]:
        """Fetchable partitions without a position: they wait for an offset reset."""
        return [tp for tp in self.fetchable() if self._positions[tp] is None]

    def reset_spec(self, partitions: list[TopicPartition]) -> int:
        """The ListOffsets spec (EARLIEST or LATEST) that resets `partitions` under the
        reset policy. Raises OffsetOutOfRangeError when the policy is 'none'."""
        if self.auto_offset_reset == "none":
            raise OffsetOutOfRangeError(
                f"no position for {partitions} and auto_offset_reset is 'none'"
            )
        return EARLIEST if self.auto_offset_reset == "earliest" else LATEST

    def consumed_offsets(
        self, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        """Positions of `partitions` (default: every assigned one) that have one: what a
        group commit stores."""
        wanted = self._positions if partitions is None else partitions
        return {tp: offset for tp in wanted if (offset := self._positions.get(tp)) is not None}

    # ---------------------------------------------------------------------- buffer
    def add_fetched(
        self, tp: TopicPartition, records: Iterable[R], next_fetch_offset: int
    ) -> None:
        """Buffer the records a fetch of `tp` returned; fetch from `next_fetch_offset` next
        (past the last record, or past control batches and gaps that held none). `records`
        may be a lazy Sequence: it is only sliced when handed out."""
        chunk = records if isinstance(records, Sequence) else list(records)
        if len(chunk):
            self._buffer.append([tp, chunk, 0])
        self._fetch_positions[tp] = next_fetch_offset

    def has_buffered(self) -> bool:
        return bool(self._buffer)

    def buffered_partitions(self) -> set[TopicPartition]:
        """Partitions with records waiting to be handed out."""
        return {entry[0] for entry in self._buffer}  # type: ignore[misc]

    def drain(self, max_records: int) -> dict[TopicPartition, list[R]]:
        """Hand out up to `max_records` buffered records in fetch order, grouped by
        partition, moving each partition's position past the records it gave."""
        out: dict[TopicPartition, list[R]] = {}
        while self._buffer and max_records > 0:
            entry = self._buffer[0]
            tp: TopicPartition = entry[0]  # type: ignore[assignment]
            chunk: Sequence[R] = entry[1]  # type: ignore[assignment]
            start: int = entry[2]  # type: ignore[assignment]
            taken = chunk[start : start + max_records]
            if start + len(taken) >= len(chunk):
                self._buffer.popleft()
            else:
                entry[2] = start + len(taken)
            if not taken:
                continue
            given = out.get(tp)
            if given is None:
                out[tp] = list(taken)
            else:
                given.extend(taken)
            self._positions[tp] = taken[-1].offset + 1
            max_records -= len(taken)
        self._catch_up_positions()
        return out

    def _catch_up_positions(self) -> None:
        """A partition with nothing left in the buffer is consumed up to its fetch position
        (which may skip control batches and gaps that held no user records)."""
        buffered = {entry[0] for entry in self._buffer}
        for tp, fetch_position in self._fetch_positions.items():
            position = self._positions.get(tp)
            if tp not in buffered and position is not None:
                self._positions[tp] = max(position, fetch_position)
