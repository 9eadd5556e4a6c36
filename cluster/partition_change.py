"""Leader election and ISR changes for one partition: pure decisions, returned as records.

How it works: given a partition's registration and the set of live (unfenced) brokers, compute
the ISR without dead members and the leader that should serve. The leader stays while it is
alive and in sync; otherwise the first replica in replica order (the preferred one first) that
is alive and in the ISR takes over. When no ISR member is alive the partition goes leaderless
and keeps its last ISR member, so that broker (which has every committed record) can lead
again when it returns — unless the topic allows unclean election, which picks any live replica
and may lose committed records. A returned record bumps the leader epoch whenever the leader
changes (see delta.py).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from raftka.cluster.image import NO_LEADER, PartitionRegistration
from raftka.cluster.records import MetadataRecord, partition_change


def surviving_isr(current: PartitionRegistration, live: Collection[int]) -> tuple[int, ...]:
    """ISR members that are alive; never empty if the ISR was not (the last member stays)."""
    alive = tuple(b for b in current.isr if b in live)
    if alive or not current.isr:
        return alive
    keep = current.leader if current.leader in current.isr else current.isr[0]
    return (keep,)


def choose_leader(
    current: PartitionRegistration,
    isr: Sequence[int],
    live: Collection[int],
    *,
    unclean: bool = False,
    prefer_preferred: bool = False,
) -> tuple[int, tuple[int, ...]]:
    """(leader, isr) the partition should have; isr changes only for unclean elections."""
    eligible = [r for r in current.replicas if r in isr and r in live]
    preferred = current.preferred_leader
    if prefer_preferred and preferred in eligible:
        return preferred, tuple(isr)
    if current.leader in eligible:
        return current.leader, tuple(isr)
    if eligible:
        return eligible[0], tuple(isr)
    if unclean:
        alive_replicas = [r for r in current.replicas if r in live]
        if alive_replicas:
            return alive_replicas[0], (alive_replicas[0],)
    return NO_LEADER, tuple(isr)


def build_change(
    topic_id: str,
    index: int,
    current: PartitionRegistration,
    live: Collection[int],
    *,
    target_isr: Sequence[int] | None = None,
    unclean: bool = False,
    prefer_preferred: bool = False,
) -> MetadataRecord | None:
    """The PartitionChangeRecord that brings the partition in line, or None if none is due."""
    base = (
        current
        if target_isr is None
        else PartitionRegistration(
            replicas=current.replicas,
            isr=tuple(target_isr),
            leader=current.leader,
            leader_epoch=current.leader_epoch,
            partition_epoch=current.partition_epoch,
        )
    )
    isr = surviving_isr(base, live)
    leader, isr = choose_leader(
        current, isr, live, unclean=unclean, prefer_preferred=prefer_preferred
    )
    new_leader = leader if leader != current.leader else None
    new_isr = isr if isr != current.isr else None
    if new_leader is None and new_isr is None:
        return None
    return partition_change(topic_id, index, leader=new_leader, isr=new_isr)
