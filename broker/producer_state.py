"""Idempotent producers: which (producer id, epoch, sequence) a partition has stored. Pure.

How it works (Kafka's ProducerStateManager, simplified): an idempotent producer numbers the
records it sends to each partition; a batch carries its producer id, epoch and first
sequence. For each producer the partition remembers its epoch and its last few batches. A
batch whose sequences match a remembered one is a retry of something already stored: it is
not written again, and the producer is told the original offset. A batch that skips
sequences is refused (OUT_OF_ORDER); one from an older epoch is refused (INVALID_PRODUCER_EPOCH).
Leaders and followers both feed every stored batch in, and the state is rebuilt from the log on
open and after truncation, so a new leader after failover recognises retries of batches the
old leader stored.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from raftka.records import NO_PRODUCER_ID, NO_SEQUENCE, BatchHeader

# Kafka keeps the last 5 batches per producer (max.in.flight.requests.per.connection <= 5).
BATCHES_REMEMBERED = 5
PRODUCERS_MAX = 10_000
SEQUENCE_MAX = 0x7FFFFFFF


class ProducerFencedError(Exception):
    """The batch's producer epoch is older than the one this partition has seen."""


class OutOfOrderSequenceError(Exception):
    """The batch's first sequence does not follow the producer's last one."""


@dataclass(frozen=True, slots=True)
class StoredBatch:
    first_sequence: int
    last_sequence: int
    first_offset: int
    last_offset: int


@dataclass(slots=True)
class ProducerEntry:
    epoch: int
    batches: deque[StoredBatch] = field(default_factory=lambda: deque(maxlen=BATCHES_REMEMBERED))

    @property
    def last_sequence(self) -> int:
        return self.batches[-1].last_sequence if self.batches else NO_SEQUENCE


def next_sequence(sequence: int) -> int:
    return 0 if sequence == SEQUENCE_MAX else sequence + 1


class ProducerStateManager:
    def __init__(self, producers_max: int = PRODUCERS_MAX) -> None:
        self._producers: OrderedDict[int, ProducerEntry] = OrderedDict()
        self._producers_max = producers_max

    def __len__(self) -> int:
        return len(self._producers)

    def check(self, header: BatchHeader) -> StoredBatch | None:
        """Before a leader appends: the stored copy if this batch is a duplicate; None if it
        may be appended. Raises for fenced epochs and sequence gaps."""
        if header.producer_id == NO_PRODUCER_ID or header.base_sequence == NO_SEQUENCE:
            return None
        entry = self._producers.get(header.producer_id)
        if entry is None:
            return None  # unknown (new, or its state expired): accept any sequence
        if header.producer_epoch < entry.epoch:
            raise ProducerFencedError(
                f"producer {header.producer_id} epoch {header.producer_epoch} is older than "
                f"{entry.epoch}"
            )
        if header.producer_epoch > entry.epoch:
            if header.base_sequence != 0:
                raise OutOfOrderSequenceError(
                    f"producer {header.producer_id} started epoch {header.producer_epoch} at "
                    f"sequence {header.base_sequence}, not 0"
                )
            return None
        for stored in entry.batches:
            if (stored.first_sequence, stored.last_sequence) == (
                header.base_sequence,
                header.last_sequence,
            ):
                return stored
        expected = next_sequence(entry.last_sequence)
        if header.base_sequence != expected:
            raise OutOfOrderSequenceError(
                f"producer {header.producer_id} sent sequence {header.base_sequence}; "
                f"expected {expected}"
            )
        return None

    def update(self, header: BatchHeader) -> None:
        """A batch (with its final offsets) was stored."""
        if header.producer_id == NO_PRODUCER_ID or header.base_sequence == NO_SEQUENCE:
            return
        entry = self._producers.get(header.producer_id)
        if entry is None or header.producer_epoch > entry.epoch:
            entry = ProducerEntry(header.producer_epoch)
            self._producers[header.producer_id] = entry
        elif header.producer_epoch < entry.epoch:
            return
        entry.batches.append(
            StoredBatch(
                header.base_sequence, header.last_sequence, header.base_offset, header.last_offset
            )
        )
        self._producers.move_to_end(header.producer_id)
        while len(self._producers) > self._producers_max:
            self._producers.popitem(last=False)

    def clear(self) -> None:
        self._producers.clear()
