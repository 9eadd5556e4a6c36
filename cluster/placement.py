"""Replica placement for new partitions: spread replicas and preferred leaders evenly.

How it works: each new partition's preferred leader is the live broker leading the fewest
partitions (then hosting the fewest replicas, then lowest id), and its followers are the live
brokers hosting the fewest replicas. Counts include what the cluster already holds and what
earlier partitions of the same request took, so repeated creates stay balanced. Deterministic:
the same image and request give the same placement on every controller.

Capacity: a broker registers how many replicas its file-descriptor budget holds
(broker/fd_budget.py). A placement that would put more on any broker is refused whole, before
anything is committed (CapacityError), so the cluster never holds partitions that a broker
cannot open.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from raftka.cluster.image import MetadataImage


class PlacementError(ValueError):
    """Not enough live brokers for the requested replication factor."""


class CapacityError(PlacementError):
    """The placement would put more replicas on a broker than it registered it can host."""


class ReplicaPlacer:
    def __init__(self, image: MetadataImage, live_brokers: Sequence[int]) -> None:
        self._live = sorted(live_brokers)
        # Replicas each broker can host (absent: no limit stated).
        self._capacity = {
            broker_id: broker.max_replicas
            for broker_id, broker in image.brokers.items()
            if broker.max_replicas > 0
        }
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
        leaders, replicas = self._leaders.copy(), self._replicas.copy()
        placed = [self._place_one(replication_factor) for _ in range(partitions)]
        over = [
            (broker_id, self._replicas[broker_id], capacity)
            for broker_id, capacity in sorted(self._capacity.items())
            # Over capacity, and by this request (a broker already past it, say after a
            # restart with a lower limit, refuses only what would add to it).
            if self._replicas[broker_id] > max(capacity, replicas[broker_id])
        ]
        if over:
            self._leaders, self._replicas = leaders, replicas
            broker_id, wanted, capacity = over[0]
            raise CapacityError(
                f"{partitions} partition(s) with replication factor {replication_factor} would "
                f"put {wanted} replicas on broker {broker_id}, which can host {capacity} "
                f"(it holds {replicas[broker_id]}); its file-descriptor budget is the limit: "
                "raise its `ulimit -n` (or max_open_files), or delete topics"
            )
        return placed

    def _place_one(self, replication_factor: int) -> tuple[int, ...]:
        leader = min(self._live, key=lambda b: (self._leaders[b], self._replicas[b], b))
        followers = sorted(
            (b for b in self._live if b != leader), key=lambda b: (self._replicas[b], b)
        )[: replication_factor - 1]
        replicas = (leader, *followers)
        self._leaders[leader] += 1
        self._replicas.update(replicas)
        return replicas


def default_replication_factor(
    configured: int, image: MetadataImage, cluster_size_min: int
) -> int:
    """`configured` capped at the cluster's size: the brokers registered, fenced or not, or
    the voters it is configured with, whichever is more. Why not the live brokers: a topic
    created while one of three is down would silently get two replicas for ever, where
    Kafka refuses (INVALID_REPLICATION_FACTOR) until the broker is back."""
    size = max(len(image.brokers), cluster_size_min)
    return max(1, min(configured, size))
