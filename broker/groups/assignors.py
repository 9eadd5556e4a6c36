"""Server-side partition assignors. Pure: members and partition counts in, assignment out.

- range: per topic, the sorted members subscribed to it get consecutive ranges of its
  partitions (Kafka's RangeAssignor): co-partitioned topics line up member by member.
- uniform: spread every partition evenly over the members that subscribe to it, keeping each
  partition with its current owner where the balance allows (sticky, like KIP-848's uniform
  assignor), so a rebalance moves as few partitions as possible.
"""

from __future__ import annotations

from collections.abc import Mapping

TopicPartition = tuple[str, int]
Assignment = dict[str, set[TopicPartition]]

ASSIGNORS = ("range", "uniform")


def range_assign(
    subscriptions: Mapping[str, frozenset[str]], partition_counts: Mapping[str, int]
) -> Assignment:
    result: Assignment = {member: set() for member in subscriptions}
    topics = sorted({t for topics in subscriptions.values() for t in topics})
    for topic in topics:
        count = partition_counts.get(topic, 0)
        members = sorted(m for m, topics in subscriptions.items() if topic in topics)
        if not members or count <= 0:
            continue
        per_member, extra = divmod(count, len(members))
        start = 0
        for i, member in enumerate(members):
            size = per_member + (1 if i < extra else 0)
            result[member].update((topic, p) for p in range(start, start + size))
            start += size
    return result


def uniform_assign(
    subscriptions: Mapping[str, frozenset[str]],
    partition_counts: Mapping[str, int],
    current: Mapping[str, frozenset[TopicPartition]],
) -> Assignment:
    result: Assignment = {member: set() for member in subscriptions}
    if not subscriptions:
        return result
    wanted = sorted(
        {
            (t, p)
            for topics in subscriptions.values()
            for t in topics
            for p in range(partition_counts.get(t, 0))
        }
    )
    eligible = {
        tp: [m for m in sorted(subscriptions) if tp[0] in subscriptions[m]] for tp in wanted
    }
    quota = -(-len(wanted) // len(subscriptions))  # ceil: nobody keeps more than this
    taken: set[TopicPartition] = set()
    for member in sorted(subscriptions):
        for tp in sorted(current.get(member, ())):
            if (
                tp in eligible
                and member in eligible[tp]
                and tp not in taken
                and len(result[member]) < quota
            ):
                result[member].add(tp)
                taken.add(tp)
    for tp in wanted:
        if tp in taken:
            continue
        owner = min(eligible[tp], key=lambda m: (len(result[m]), m))
        result[owner].add(tp)
        taken.add(tp)
    _even_out(result, eligible)
    return result


def _even_out(result: Assignment, eligible: Mapping[TopicPartition, list[str]]) -> None:
    """Move partitions from the fullest to the emptiest eligible member until counts differ
    by at most one (stickiness may have left some members over the fair share)."""
    for _ in range(sum(len(v) for v in result.values())):
        richest = max(result, key=lambda m: (len(result[m]), m))
        for tp in sorted(result[richest]):
            poorest = min(eligible[tp], key=lambda m: (len(result[m]), m))
            if len(result[richest]) - len(result[poorest]) > 1:
                result[richest].discard(tp)
                result[poorest].add(tp)
                break
        else:
            return


def assign(
    assignor: str,
    subscriptions: Mapping[str, frozenset[str]],
    partition_counts: Mapping[str, int],
    current: Mapping[str, frozenset[TopicPartition]],
) -> Assignment:
    if assignor == "uniform":
        return uniform_assign(subscriptions, partition_counts, current)
    return range_assign(subscriptions, partition_counts)
