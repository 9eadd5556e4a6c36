"""Where a follower cuts its log when it diverged from the leader (KIP-101/279/320)."""

from __future__ import annotations

from raftka.broker.log.epoch_cache import LeaderEpochCache
from raftka.broker.replication.follower_state import (
    StartOver,
    TruncateTo,
    leader_divergence,
    resolve_divergence,
)


def cache(*entries):
    return LeaderEpochCache(list(entries))


def test_leader_sees_no_divergence_when_the_follower_is_a_prefix():
    leader = cache((0, 0), (1, 50))
    assert leader_divergence(leader, 80, last_fetched_epoch=1, fetch_offset=60) is None
    assert leader_divergence(leader, 80, last_fetched_epoch=0, fetch_offset=50) is None
    assert leader_divergence(leader, 80, last_fetched_epoch=-1, fetch_offset=0) is None


def test_old_leader_with_an_unreplicated_tail_is_told_where_its_epoch_ended():
    # follower (old leader) wrote epoch 1 up to 70; the new leader's epoch 2 starts at 60
    leader = cache((0, 0), (1, 50), (2, 60))
    assert leader_divergence(leader, 90, last_fetched_epoch=1, fetch_offset=70) == (1, 60)
    follower = cache((0, 0), (1, 50))
    assert resolve_divergence(1, 60, follower, 70, 0) == TruncateTo(60)


def test_follower_with_an_epoch_the_leader_never_had_falls_back_to_the_one_before():
    # follower has epoch 2 (from a leader that never replicated it); the leader went 1 -> 3
    leader = cache((0, 0), (1, 40), (3, 55))
    assert leader_divergence(leader, 70, last_fetched_epoch=2, fetch_offset=65) == (1, 55)
    follower = cache((0, 0), (1, 40), (2, 50))
    assert resolve_divergence(1, 55, follower, 65, 0) == TruncateTo(50)


def test_leader_without_any_old_epoch_makes_the_follower_start_over():
    leader = cache((5, 100))
    assert leader_divergence(leader, 120, last_fetched_epoch=3, fetch_offset=90) == (-1, -1)
    assert resolve_divergence(-1, -1, cache((3, 0)), 90, 100) == StartOver(100)
