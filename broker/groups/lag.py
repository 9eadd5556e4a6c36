"""Consumer lag for `raftka_consumergroup_lag`: which end offsets the group coordinator must
learn from other brokers, and the lag itself. Pure decisions: the committed offsets, the
hosted partitions, the leaders and the clock come in as arguments (end_offsets.py does the
asking, broker/metrics.py the reporting).

Why the coordinator asks the leaders rather than leaving lag to an exporter: the
coordinator is the one broker that knows a group's committed offsets without a request,
and Kafka's lag exporters (Burrow, kafka-lag-exporter) compute lag as the leader's end
offset minus the committed offset. So the coordinator reads the end offsets of the
partitions it hosts from its own replicas (no request) and asks the leaders of the others,
one ListOffsets per leader for all of them at once, when it is scraped. A partition whose
leader is unknown or does not answer gets no sample rather than a guessed one.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

TopicPartitionKey = tuple[str, int]
LeaderOf = Callable[[str, int], int]  # (topic, partition) -> leader broker id, -1: none


def local_end_offsets(partitions: Iterable[Any]) -> dict[TopicPartitionKey, int]:
    """High watermarks of the replicas hosted here (broker/partition.py Partition objects),
    a leader's preferred over a follower's (a follower's trails by up to one fetch round)."""
    found: dict[TopicPartitionKey, tuple[bool, int]] = {}
    for p in partitions:
        key = (p.tp.topic, p.tp.partition)
        known = found.get(key)
        if known is None or (p.is_leader and not known[0]):
            found[key] = (bool(p.is_leader), int(p.high_watermark))
    return {key: offset for key, (_, offset) in found.items()}


def end_offsets_to_ask(
    committed: Iterable[tuple[str, str, int, int]],
    hosted: Collection[TopicPartitionKey],
    leader_of: LeaderOf,
    self_id: int,
    partitions_max: int,
) -> tuple[dict[int, list[TopicPartitionKey]], int]:
    """Per leader broker id, the partitions with a committed offset and no replica here,
    each once however many groups committed it, sorted; at most `partitions_max` in all.
    Also how many were left out by that bound. A partition without a leader (< 0) or led
    here (a leader move not yet applied locally) is not asked for."""
    wanted = sorted({(topic, partition) for _, topic, partition, offset in committed
                     if offset >= 0 and (topic, partition) not in hosted})
    askable = [(leader_of(topic, partition), topic, partition) for topic, partition in wanted]
    askable = [a for a in askable if a[0] >= 0 and a[0] != self_id]
    plan: dict[int, list[TopicPartitionKey]] = {}
    for leader, topic, partition in askable[:partitions_max]:
        plan.setdefault(leader, []).append((topic, partition))
    return plan, max(0, len(askable) - partitions_max)


def fresh_end_offsets(
    learned: Mapping[TopicPartitionKey, tuple[int, float]], now_s: float, max_age_s: float
) -> dict[TopicPartitionKey, int]:
    """The (offset, learned at) entries not older than `max_age_s`: a leader that stopped
    answering leaves its partitions without a lag sample rather than with a stale one."""
    return {key: offset for key, (offset, at_s) in learned.items() if now_s - at_s <= max_age_s}


def consumer_group_lag(
    committed: Iterable[tuple[str, str, int, int]], end_offsets: Mapping[TopicPartitionKey, int]
) -> Iterator[tuple[str, str, int, int]]:
    """(group, topic, partition, lag) for every committed offset whose end offset is known:
    lag = end offset (high watermark: what a consumer can read) - committed, never below 0."""
    for group, topic, partition, offset in committed:
        end = end_offsets.get((topic, partition))
        if end is not None and end >= 0 and offset >= 0:
            yield group, topic, partition, max(0, end - offset)
