"""Choosing a partition for a record, the way Kafka clients do.

Why: Kafka compatibility. A keyed record must land on the partition that Kafka's Java
client, librdkafka (`partitioner=murmur2_random`) and kafkajs (its default partitioner)
would choose. All of them use `toPositive(murmur2(key)) % numPartitions`. Data may move
between Raftka and Kafka, and one topic may be fed by both our client and theirs. If we
partitioned any other way, records with one key would then be split across two partitions.
That breaks per-key ordering, and so does everything built on it: compacted topics, joins
and consumers that keep state per key. `murmur2` is therefore a bit-exact port of Kafka's
`Utils.murmur2`, and it returns the same signed 32-bit Java `int`.

Records without a key follow KIP-480's sticky partitioning (Java client 2.4 to 3.2, and
kafka-python's `StickyPartitioner`). A topic's keyless records go to one partition until
its batch is full or sent, and then they move to another partition chosen at random.
Fuller batches mean fewer requests. No placement is promised for keyless records, so this
is only about performance, not compatibility.

Everything here is pure: no I/O, no clock, and no global random state. The sticky
partitioner takes its `random.Random` from the caller, so tests can seed it.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence

_SEED = 0x9747B28C
_M = 0x5BD1E995
_R = 24
_MASK32 = 0xFFFFFFFF
_SIGN_BIT = 0x80000000
_WORDS = struct.Struct("<I")  # Kafka reads the input as little-endian 32-bit words


def murmur2(data: bytes) -> int:
    """Kafka's `Utils.murmur2`: MurmurHash2 with Kafka's seed, as a signed 32-bit int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK32
    tail = length & ~3
    for (k,) in _WORDS.iter_unpack(memoryview(data)[:tail]):
        k = (k * _M) & _MASK32
        k ^= k >> _R
        k = (k * _M) & _MASK32
        h = ((h * _M) & _MASK32) ^ k
    # The last 1 to 3 bytes; this is the Java switch that falls through from case 3 to case 1.
    remaining = length & 3
    if remaining == 3:
        h ^= data[tail + 2] << 16
    if remaining >= 2:
        h ^= data[tail + 1] << 8
    if remaining >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h - (1 << 32) if h & _SIGN_BIT else h


def to_positive(value: int) -> int:
    """Kafka's `Utils.toPositive`: clear the sign bit (unlike abs, it maps MIN_VALUE to 0)."""
    return value & 0x7FFFFFFF


def _check_num_partitions(num_partitions: int) -> None:
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be at least 1, got {num_partitions}")


def partition_for_key(key: bytes, num_partitions: int) -> int:
    """The partition Kafka's default partitioners choose for a record with this key."""
    _check_num_partitions(num_partitions)
    return to_positive(murmur2(key)) % num_partitions


class StickyPartitioner:
    """KIP-480 sticky partition choice for records without a key, kept per topic.

    `partition` returns the topic's current sticky partition. The producer calls
    `on_new_batch` when that partition's batch is full or has been sent, and the topic
    then moves to another partition chosen at random. `available` lists the partitions
    whose leader is known. When it is given and not empty, choices are made only from it;
    otherwise they are made from all partitions. Entries outside `range(num_partitions)`
    are ignored, because metadata can be stale. Not thread-safe: callers must serialise
    their calls, except `current`, a read.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._sticky: dict[str, int] = {}

    def current(self, topic: str, num_partitions: int) -> int | None:
        """The topic's sticky partition if it has a valid one, else None; one dict read,
        safe without the callers' lock (as Kafka's StickyPartitionCache reads its map
        without one): a reader that races a move gets the old partition, which is still
        a partition of the topic."""
        current = self._sticky.get(topic)
        return current if current is not None and current < num_partitions else None

    def partition(
        self, topic: str, num_partitions: int, available: Sequence[int] | None = None
    ) -> int:
        _check_num_partitions(num_partitions)
        current = self._sticky.get(topic)
        if current is None or current >= num_partitions:
            current = self._choose(num_partitions, available, exclude=None)
            self._sticky[topic] = current
        return current

    def on_new_batch(
        self,
        topic: str,
        num_partitions: int,
        previous_partition: int,
        available: Sequence[int] | None = None,
    ) -> int:
        _check_num_partitions(num_partitions)
        current = self._sticky.get(topic)
        # As in Kafka's StickyPartitionCache.nextPartition: if the topic has already moved
        # off `previous_partition`, this notice is stale (a second batch for the old
        # partition filled up), so stay where we are. Moving again would only scatter the
        # records into more small batches.
        if current is not None and current != previous_partition and current < num_partitions:
            return current
        current = self._choose(num_partitions, available, exclude=previous_partition)
        self._sticky[topic] = current
        return current

    def _choose(
        self, num_partitions: int, available: Sequence[int] | None, exclude: int | None
    ) -> int:
        candidates: Sequence[int] = sorted(
            {p for p in available or () if 0 <= p < num_partitions}
        ) or range(num_partitions)
        if exclude is not None and len(candidates) > 1:
            candidates = [p for p in candidates if p != exclude]
        return self._rng.choice(candidates)
