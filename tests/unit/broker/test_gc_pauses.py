"""The garbage collector's pause bookkeeping (broker/gc_pauses.py), with a fake clock."""

from __future__ import annotations

import gc

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from raftka.broker.gc_pauses import GcPauses, PauseHistogram, freeze_startup_heap


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def samples(pauses: GcPauses) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(pauses)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def test_each_collection_is_timed_from_start_to_stop_by_generation():
    clock = FakeClock()
    pauses = GcPauses(clock=clock, frozen=lambda: 87_000)
    pauses.on_gc("start", {"generation": 0})
    clock.now += 0.00003
    pauses.on_gc("stop", {"generation": 0, "collected": 0, "uncollectable": 0})
    pauses.on_gc("start", {"generation": 2})
    clock.now += 0.06
    pauses.on_gc("stop", {"generation": 2, "collected": 5, "uncollectable": 0})

    got = samples(pauses)
    assert got[("raftka_gc_pause_seconds_count", (("generation", "0"),))] == 1
    assert got[("raftka_gc_pause_seconds_bucket", (("generation", "0"), ("le", "0.0001")))] == 1
    assert got[("raftka_gc_pause_seconds_count", (("generation", "2"),))] == 1
    assert got[("raftka_gc_pause_seconds_bucket", (("generation", "2"), ("le", "0.05")))] == 0
    assert got[("raftka_gc_pause_seconds_bucket", (("generation", "2"), ("le", "0.1")))] == 1
    assert got[("raftka_gc_pause_seconds_sum", (("generation", "2"),))] == pytest.approx(0.06)
    assert got[("raftka_gc_pause_seconds_count", (("generation", "1"),))] == 0
    assert got[("raftka_gc_frozen_objects", ())] == 87_000


def test_a_stop_without_its_start_is_not_counted():
    """Installed mid-collection, the first callback it sees is a stop: no made-up pause."""
    pauses = GcPauses(clock=FakeClock())
    pauses.on_gc("stop", {"generation": 2, "collected": 0, "uncollectable": 0})
    assert pauses.pauses.count(2) == 0


def test_a_pause_beyond_the_last_bucket_lands_in_inf():
    histogram = PauseHistogram((0.001, 0.01))
    histogram.observe(1, 5.0)
    assert histogram.cumulative(1) == [("0.001", 0), ("0.01", 0), ("+Inf", 1)]
    assert histogram.sum_s(1) == 5.0


@pytest.mark.parametrize("buckets", [(), (0.01, 0.001), (0.001, 0.001), (0.0, 0.1)])
def test_pause_buckets_are_checked(buckets):
    with pytest.raises(ValueError, match="pause buckets"):
        PauseHistogram(buckets)


def test_install_times_real_collections_and_uninstall_stops():
    pauses = GcPauses()
    pauses.install()
    pauses.install()  # twice is once
    try:
        assert gc.callbacks.count(pauses.on_gc) == 1
        gc.collect()
        assert pauses.pauses.count(2) >= 1
    finally:
        pauses.uninstall()
    assert pauses.on_gc not in gc.callbacks
    seen = pauses.pauses.count(2)
    gc.collect()
    assert pauses.pauses.count(2) == seen


def test_freezing_takes_the_heap_out_of_full_collections():
    try:
        frozen = freeze_startup_heap()
        assert frozen > 1000  # at least the modules this test process imported
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()  # the rest of the test session collects as before
