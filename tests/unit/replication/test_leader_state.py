"""LeaderState: high watermark over the (maximal) ISR, lag-based shrink, catch-up expand."""

from __future__ import annotations

import random

from raftka.broker.replication.leader_state import LeaderState


def leader(isr=(1, 2, 3), hw=0, epoch_start=0, now=0) -> LeaderState:
    return LeaderState(1, (1, 2, 3), isr, now, hw, epoch_start)


def test_hw_is_the_smallest_log_end_offset_in_the_isr():
    state = leader()
    assert state.compute_high_watermark(10) == 0  # followers not heard from yet
    state.record_fetch(2, 7, 10, now_ms=1)
    assert state.compute_high_watermark(10) == 0
    state.record_fetch(3, 5, 10, now_ms=1)
    assert state.compute_high_watermark(10) == 5
    state.record_fetch(3, 10, 10, now_ms=2)
    assert state.compute_high_watermark(10) == 7


def test_hw_never_goes_back():
    state = leader(hw=8)
    state.record_fetch(2, 3, 10, now_ms=1)
    state.record_fetch(3, 3, 10, now_ms=1)
    assert state.compute_high_watermark(10) == 8


def test_members_outside_the_isr_do_not_hold_the_hw_back():
    state = leader(isr=(1, 2))
    state.record_fetch(2, 9, 10, now_ms=1)
    assert state.compute_high_watermark(10) == 9


def test_a_pending_joiner_holds_the_hw_back_until_committed():
    state = leader(isr=(1, 2))
    state.record_fetch(2, 10, 10, now_ms=1)
    state.record_fetch(3, 6, 10, now_ms=1)
    state.pending_isr = frozenset({1, 2, 3})
    assert state.compute_high_watermark(12) == 6


def test_a_follower_that_stops_catching_up_is_proposed_out():
    state = leader(now=0)
    state.record_fetch(2, 10, 10, now_ms=100)
    state.record_fetch(3, 4, 10, now_ms=100)
    assert state.proposed_isr(now_ms=5_000, lag_max_ms=10_000) is None
    assert state.proposed_isr(now_ms=10_050, lag_max_ms=10_000) == frozenset({1, 2})


def test_keeping_pace_with_a_moving_end_counts_as_caught_up():
    state = leader()
    state.record_fetch(2, 5, 10, now_ms=1000)  # behind, but...
    state.record_fetch(2, 10, 20, now_ms=2000)  # ...reached the end of the previous fetch
    assert state.follower(2).last_caught_up_ms == 1000
    assert 2 not in state.lagging_followers(now_ms=10_500, lag_max_ms=10_000)


def test_a_caught_up_follower_is_proposed_back_once_it_has_the_epoch_start():
    state = leader(isr=(1, 2), hw=10, epoch_start=12)
    state.record_fetch(3, 11, 15, now_ms=1)
    assert state.caught_up_followers() == set()
    state.record_fetch(3, 12, 15, now_ms=2)
    assert state.proposed_isr(now_ms=3, lag_max_ms=10_000) == frozenset({1, 2, 3})
    state.pending_isr = frozenset({1, 2, 3})
    assert state.proposed_isr(now_ms=4, lag_max_ms=10_000) is None
    state.update_isr((1, 2, 3))
    assert state.pending_isr is None and state.isr == frozenset({1, 2, 3})


def test_a_silent_follower_of_an_idle_partition_is_not_let_back_in():
    """Seen with 300 idle partitions: a follower that stopped fetching was shrunk out for
    lag, then at once proposed back (its log end offset 0 still reached the high watermark
    0), then out again, every ISR round, until the controller fenced it: thousands of
    metadata commits. A follower rejoins only if it caught up within the lag limit."""
    state = leader(isr=(1, 2, 3), now=0)
    state.record_fetch(2, 0, 0, now_ms=100)
    state.record_fetch(3, 0, 0, now_ms=100)  # and then broker 3 goes silent
    state.record_fetch(2, 0, 0, now_ms=1_500)
    shrunk = state.proposed_isr(now_ms=1_500, lag_max_ms=1_000)
    assert shrunk == frozenset({1, 2})
    state.update_isr(shrunk)
    assert state.proposed_isr(now_ms=1_750, lag_max_ms=1_000) is None
    state.record_fetch(3, 0, 0, now_ms=2_000)  # it is back
    assert state.proposed_isr(now_ms=2_250, lag_max_ms=1_000) == frozenset({1, 2, 3})


def test_a_fenced_follower_is_not_proposed_back_in():
    """Seen at 1,000 partitions: after a kill -9 the controller fenced the broker at once,
    but its last fetches were recent, so every leader proposed it back into every ISR each
    round (250 ms) for a lag period: 11,000 proposals refused as INELIGIBLE_REPLICA. As in
    Kafka (KIP-841), a leader proposes only brokers its metadata shows unfenced."""
    state = leader(isr=(1, 2), now=0)
    state.record_fetch(2, 0, 0, now_ms=100)
    state.record_fetch(3, 0, 0, now_ms=100)
    assert state.proposed_isr(now_ms=200, lag_max_ms=1_000,
                              eligible=lambda b: b != 3) is None
    assert state.proposed_isr(now_ms=200, lag_max_ms=1_000,
                              eligible=lambda b: True) == frozenset({1, 2, 3})


def test_the_full_isr_shortcut_proposes_exactly_what_the_general_rule_does():
    """proposed_isr skips the set arithmetic when every replica is in the ISR and none lags;
    over random positions and clocks it must propose the same ISRs as the rule it skips."""
    rng = random.Random(17)
    lag_max_ms = 100
    for _ in range(2_000):
        now_ms = 1_000
        state = LeaderState(1, [1, 2, 3], rng.choice([[1, 2, 3], [1, 2], [1]]), now_ms, 0, 0)
        for replica in (2, 3):
            if rng.random() < 0.8:
                state.record_fetch(replica, rng.randrange(0, 20), rng.randrange(0, 20),
                                   now_ms + rng.randrange(0, 300))
        state.compute_high_watermark(rng.randrange(0, 20))
        later_ms = now_ms + rng.randrange(0, 400)
        lagging = state.lagging_followers(later_ms, lag_max_ms)
        joining = state.caught_up_followers(later_ms, lag_max_ms)
        expected = (state.isr - lagging) | joining if lagging or joining else None
        assert state.proposed_isr(later_ms, lag_max_ms) == expected
