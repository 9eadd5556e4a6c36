"""Replica placement for new partitions: spread replicas and preferred leaders evenly.

How it works: each new partition's preferred leader is the live broker leading the fewest
partitions (then hosting the fewest replicas, then lowest id), and its followers are the live
brokers hosting the fewest replicas. Counts include what the cluster already holds and what
earlier partitions of the same request took, so repeated creates stay balanced. Deterministic:
the same image and request give the same placement on every controller.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from raftka.cluster.image import MetadataImage


class PlacementError(ValueError):
    """Not enough live brokers for the requested replication factor."""


class ReplicaPlacer:
    def __init__(self, image: MetadataImage, live_brokers: Sequence[int]) -> None:
        self._live = sorted(live_brokers)
        self._leaders: Counter[int] = Counter()
        self._replicas: Counter[int] = Counter()
        for _, _, registration in image.iter_partitions():
            if registration.replicas:
                self._leaders[registration.replicas[0]] += 1
            self._replicas.update(registration.replicas)

    def place(self, partitions: int, replication_factor: int) -> list[tuple[int, ...]]:
        if replication_factor > len(self._live):
            raise PlacementError(
                f"replication factor {replication_factor} is larger than the number of live "
                f"brokers ({len(self._live)})"
            )
        return [self._place_one(replication_factor) for _ in range(partitions)]

    def _place_one(self, replication_factor: int) -> tuple[int, ...]:
        leader = min(self._live, key=lambda b: (self._leaders[b], self._replicas[b], b))
        followers = sorted(
            (b for b in self._live if b != leader), key=lambda b: (self._replicas[b], b)
        )[: replication_factor - 1]
        replicas = (leader, *followers)
        self._leaders[leader] += 1
        self._replicas.update(replicas)
        return replicas
