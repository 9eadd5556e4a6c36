"""An idempotent producer's identity and sequence numbers (Kafka's enable.idempotence).

How it works: the producer gets a producer id from the cluster; each batch it sends to a
partition carries that id, its epoch and the sequence number of its first record; sequences
run on per partition. A retried batch keeps its numbers, so a leader that already stored it
(say the reply was lost, or the old leader replicated it before dying) answers with the
original offset instead of writing it twice. When sequences can no longer line up (a batch
failed for good), the producer takes a new producer id and starts again from 0.
Used by the producer's sender thread only.
"""

from __future__ import annotations

from raftka.client.accumulator import ProducerBatch

SEQUENCE_MAX = 0x7FFFFFFF


class ProducerIdentity:
    def __init__(self) -> None:
        self.producer_id = -1
        self.producer_epoch = -1
        self._next_sequence: dict[tuple[str, int], int] = {}

    @property
    def known(self) -> bool:
        return self.producer_id >= 0

    def reset(self, producer_id: int, producer_epoch: int) -> None:
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self._next_sequence.clear()

    def forget(self) -> None:
        """Sequences can no longer line up: fetch a new identity before the next batch."""
        self.producer_id = -1
        self.producer_epoch = -1
        self._next_sequence.clear()

    def stamp(self, batch: ProducerBatch) -> None:
        """Give a batch its (id, epoch, first sequence) the first time it is sent."""
        if batch.producer_id >= 0 or not self.known:
            return
        key = (batch.topic, batch.partition)
        sequence = self._next_sequence.get(key, 0)
        batch.producer_id = self.producer_id
        batch.producer_epoch = self.producer_epoch
        batch.base_sequence = sequence
        self._next_sequence[key] = (sequence + batch.record_count) & SEQUENCE_MAX
