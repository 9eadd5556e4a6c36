"""Where a follower must cut its log when the leader says it diverged. Pure.

How it works (Kafka's KIP-101/KIP-279, with the fetch-based check of KIP-320): every follower
fetch carries the epoch of the follower's last batch. When that epoch ended earlier on the
leader than the follower's log goes, the leader answers with (epoch E, end offset O): the
largest epoch it knows up to the follower's, and where E ends in its log. Records at or past
O in the follower's log were never committed; the follower keeps what both logs share: up to
the smaller of O and the end of E in its own log. When the leader knows no epoch that old
(its log starts later), the follower starts over at the leader's log start offset.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftka.broker.log.epoch_cache import UNDEFINED_EPOCH, LeaderEpochCache


@dataclass(frozen=True, slots=True)
class TruncateTo:
    offset: int


@dataclass(frozen=True, slots=True)
class StartOver:
    """Empty the log and continue from the leader's log start offset."""

    offset: int


def resolve_divergence(
    diverging_epoch: int,
    diverging_end_offset: int,
    local_epochs: LeaderEpochCache,
    local_end_offset: int,
    leader_start_offset: int,
) -> TruncateTo | StartOver:
    if diverging_epoch == UNDEFINED_EPOCH or diverging_end_offset < 0:
        return StartOver(leader_start_offset)
    local_epoch, local_end = local_epochs.end_offset_for(diverging_epoch, local_end_offset)
    if local_epoch == UNDEFINED_EPOCH:
        return TruncateTo(min(diverging_end_offset, local_end_offset))
    return TruncateTo(min(diverging_end_offset, local_end, local_end_offset))


def leader_divergence(
    leader_epochs: LeaderEpochCache,
    leader_end_offset: int,
    last_fetched_epoch: int,
    fetch_offset: int,
) -> tuple[int, int] | None:
    """Leader side: (epoch, end offset) to send back when the follower's log diverged."""
    if last_fetched_epoch < 0:
        return None
    epoch, end = leader_epochs.end_offset_for(last_fetched_epoch, leader_end_offset)
    if epoch == UNDEFINED_EPOCH or epoch < last_fetched_epoch or end < fetch_offset:
        return epoch, end
    return None
