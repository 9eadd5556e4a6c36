"""Key hashing that matches Kafka's clients, and KIP-480 sticky partitioning for keyless records."""

from __future__ import annotations

import random
from types import ModuleType

import pytest

from raftka.client.partitioner import StickyPartitioner, murmur2, partition_for_key, to_positive

# Verbatim from Apache Kafka's UtilsTest.testMurmur2
# (apache/kafka, clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java).
KAFKA_MURMUR2_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (bytes([ord("a"), ord("b"), ord("c")]), 479470107),
]


def _random_keys(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randrange(0, 65)) for _ in range(count)]


# --- murmur2 / to_positive / partition_for_key ---


@pytest.mark.parametrize(("data", "expected"), KAFKA_MURMUR2_VECTORS)
def test_murmur2_matches_kafka_utils_test_vectors(data, expected):
    assert murmur2(data) == expected


def test_murmur2_is_a_signed_32_bit_int_for_every_tail_length():
    for key in [*_random_keys(seed=1, count=500), b""]:
        assert -(2**31) <= murmur2(key) < 2**31


def test_to_positive_clears_only_the_sign_bit():
    assert to_positive(0) == 0
    assert to_positive(5) == 5
    assert to_positive(2**31 - 1) == 2**31 - 1
    assert to_positive(-1) == 2**31 - 1
    assert to_positive(-(2**31)) == 0  # where abs() would overflow in Java
    for _, hashed in KAFKA_MURMUR2_VECTORS:
        assert to_positive(hashed) == hashed % 2**31


@pytest.mark.parametrize(("data", "hashed"), KAFKA_MURMUR2_VECTORS)
def test_partition_for_key_is_to_positive_murmur2_mod_n(data, hashed):
    for n in (1, 2, 3, 12, 100, 2**31 - 1):
        assert partition_for_key(data, n) == to_positive(hashed) % n


def test_partition_for_key_is_stable_and_in_range_for_many_keys():
    keys = _random_keys(seed=2, count=2000)
    for n in (1, 2, 3, 7, 12, 64, 1000):
        first = [partition_for_key(k, n) for k in keys]
        assert [partition_for_key(k, n) for k in keys] == first
        assert all(0 <= p < n for p in first)
    # 2,000 hashed keys fill every one of 12 partitions
    assert {partition_for_key(k, 12) for k in keys} == set(range(12))


@pytest.mark.parametrize("n", [0, -1, -100])
def test_partition_for_key_rejects_fewer_than_one_partition(n):
    with pytest.raises(ValueError, match=r"num_partitions must be at least 1, got -?\d+"):
        partition_for_key(b"key", n)


class _OneTopicCluster:
    """The part of kafka-python's ClusterMetadata that its DefaultPartitioner reads."""

    def __init__(self, topic: str, num_partitions: int) -> None:
        self._topic = topic
        self._partitions = set(range(num_partitions))

    def topics(self) -> set[str]:
        return {self._topic}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self._partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self._partitions


def _kafka_python_partition(module: ModuleType, key: bytes, num_partitions: int) -> int:
    partitioner = module.DefaultPartitioner()
    if hasattr(partitioner, "partition"):  # kafka-python >= 3
        cluster = _OneTopicCluster("t", num_partitions)
        return partitioner.partition("t", key, key, None, None, cluster)
    partitions = list(range(num_partitions))  # kafka-python 2.x: a classmethod __call__
    return partitioner(key, partitions, partitions)


def test_partition_for_key_agrees_with_kafka_python_default_partitioner():
    default = pytest.importorskip("kafka.partitioner.default")
    rng = random.Random(3)
    for _ in range(1000):
        key = rng.randbytes(rng.randrange(0, 65))
        n = rng.choice([1, 2, 3, 5, 12, 50, 64, 1000, rng.randrange(1, 10_000)])
        assert partition_for_key(key, n) == _kafka_python_partition(default, key, n), (key, n)
        assert murmur2(key) & 0xFFFFFFFF == default.murmur2(key) & 0xFFFFFFFF, key


# --- StickyPartitioner ---


def test_sticky_partitioner_sticks_until_on_new_batch():
    sticky = StickyPartitioner(random.Random(4))
    first = sticky.partition("orders", 6)
    assert all(sticky.partition("orders", 6) == first for _ in range(50))
    second = sticky.on_new_batch("orders", 6, first)
    assert second != first
    assert all(sticky.partition("orders", 6) == second for _ in range(50))


def test_sticky_partitioner_never_returns_the_previous_partition_when_others_exist():
    for n in (2, 3, 12):
        sticky = StickyPartitioner(random.Random(n))
        current = sticky.partition("t", n)
        seen = {current}
        for _ in range(300):
            nxt = sticky.on_new_batch("t", n, current)
            assert nxt != current and 0 <= nxt < n
            current = nxt
            seen.add(current)
        assert seen == set(range(n))  # still spread over every partition


def test_sticky_partitioner_ignores_a_stale_new_batch_notice():
    # Kafka's StickyPartitionCache moves on only when the batch that filled up was
    # for the current sticky partition.
    sticky = StickyPartitioner(random.Random(5))
    first = sticky.partition("t", 10)
    second = sticky.on_new_batch("t", 10, first)
    assert sticky.on_new_batch("t", 10, first) == second
    assert sticky.partition("t", 10) == second


def test_sticky_partitioner_keeps_one_partition_per_topic():
    sticky = StickyPartitioner(random.Random(6))
    a = sticky.partition("a", 100)
    b = sticky.partition("b", 100)
    a2 = sticky.on_new_batch("a", 100, a)
    assert sticky.partition("b", 100) == b
    assert sticky.partition("a", 100) == a2


def test_sticky_partitioner_chooses_only_available_partitions():
    sticky = StickyPartitioner(random.Random(7))
    current = sticky.partition("t", 8, available=[2, 5])
    assert current in (2, 5)
    for _ in range(100):
        nxt = sticky.on_new_batch("t", 8, current, available=[2, 5])
        assert nxt == ({2, 5} - {current}).pop()
        current = nxt


def test_sticky_partitioner_with_only_the_previous_partition_available_stays_on_it():
    sticky = StickyPartitioner(random.Random(8))
    current = sticky.partition("t", 8, available=[3])
    assert current == 3
    assert sticky.on_new_batch("t", 8, 3, available=[3]) == 3


def test_sticky_partitioner_uses_all_partitions_when_none_are_available():
    for available in (None, [], [9, 42, -1]):  # out-of-range entries do not count
        sticky = StickyPartitioner(random.Random(9))
        seen = {sticky.partition("t", 4, available=available)}
        for _ in range(100):
            seen.add(sticky.on_new_batch("t", 4, sticky.partition("t", 4), available=available))
        assert seen == set(range(4))


def test_sticky_partitioner_with_one_partition_always_returns_zero():
    sticky = StickyPartitioner(random.Random(10))
    assert sticky.partition("t", 1) == 0
    for _ in range(20):
        assert sticky.on_new_batch("t", 1, 0) == 0
        assert sticky.partition("t", 1) == 0


def test_sticky_partitioner_rechooses_when_the_stored_partition_is_out_of_range():
    for seed in range(50):
        sticky = StickyPartitioner(random.Random(seed))
        stored = sticky.partition("t", 100)
        now = sticky.partition("t", 5)
        assert 0 <= now < 5
        if stored < 5:
            assert now == stored
        assert sticky.partition("t", 5) == now


def test_sticky_partitioner_is_deterministic_for_a_seeded_random():
    def run(seed: int) -> list[int]:
        sticky = StickyPartitioner(random.Random(seed))
        out = [sticky.partition("t", 16)]
        for i in range(100):
            available = None if i % 3 else [1, 4, 9, 15]
            out.append(sticky.on_new_batch("t", 16, out[-1], available=available))
        return out

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_sticky_partitioner_leaves_global_random_alone():
    state = random.getstate()
    sticky = StickyPartitioner(random.Random(13))
    current = sticky.partition("t", 7)
    for _ in range(50):
        current = sticky.on_new_batch("t", 7, current)
    assert random.getstate() == state


@pytest.mark.parametrize("n", [0, -3])
def test_sticky_partitioner_rejects_fewer_than_one_partition(n):
    sticky = StickyPartitioner(random.Random(14))
    with pytest.raises(ValueError, match="num_partitions must be at least 1"):
        sticky.partition("t", n)
    with pytest.raises(ValueError, match="num_partitions must be at least 1"):
        sticky.on_new_batch("t", n, 0)


def test_sticky_current_is_the_partition_chosen_or_none() -> None:
    sticky = StickyPartitioner(random.Random(7))
    assert sticky.current("t", 4) is None  # nothing chosen yet: the caller takes the lock
    chosen = sticky.partition("t", 4)
    assert sticky.current("t", 4) == chosen
    moved = sticky.on_new_batch("t", 4, chosen)
    assert sticky.current("t", 4) == moved != chosen
    # fewer partitions than the one chosen (stale metadata): not valid, so None
    assert sticky.current("t", moved) is None
    assert sticky.current("t", 0) is None
