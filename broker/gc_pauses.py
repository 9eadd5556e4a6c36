"""The garbage collector's pauses in a broker process: the start-up heap frozen, and every
collection's length counted for /metrics.

Why freeze: CPython's full (generation 2) collection walks every tracked object, and a
broker's start-up leaves ~87,000 of them that live as long as the process (modules, classes,
functions; in a test venv kio also imports hypothesis for its strategies, ~36,000 more).
Each full collection then held the GIL for 50-140 ms — every thread of the broker stopped,
produce rounds included — about once a minute or two per broker under load (BENCHMARKS.md,
"The brokers' garbage collector"). `gc.freeze()` after start-up moves those objects to the permanent
generation, which collections skip: a full collection then took ~1 ms. Objects made later
(partitions, segments, sessions) are still collected as usual; only cycles among the frozen
start-up objects are never freed, and they were made once.

Why count: a pause stops every request at once, so it shows in tail latency and nowhere
else. `raftka_gc_pause_seconds{generation}` (a histogram) and `raftka_gc_frozen_objects`
make it visible where the JVM's GC logs are for Kafka. The recorder is process-wide
(`gc.callbacks` is), so it is installed by the process entry point (broker/main.py) and
handed to the broker's metrics; brokers run in-process by tests have none.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

# Pause buckets (s): a young collection takes tens of microseconds, an unfrozen full one of
# a broker 50-140 ms.
PAUSE_BUCKETS_S = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
GENERATIONS = (0, 1, 2)


def freeze_startup_heap() -> int:
    """Collect what start-up left as garbage, then freeze the rest; the objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class PauseHistogram:
    """Cumulative-bucket counts and the sum of pauses, per generation (pure bookkeeping)."""

    def __init__(self, buckets_s: Sequence[float] = PAUSE_BUCKETS_S) -> None:
        if list(buckets_s) != sorted(buckets_s) or len(set(buckets_s)) != len(buckets_s):
            raise ValueError(f"pause buckets must be strictly increasing, got {buckets_s}")
        if not buckets_s or buckets_s[0] <= 0:
            raise ValueError(f"pause buckets must be positive seconds, got {buckets_s}")
        self.buckets_s = tuple(buckets_s)
        # per generation: a count per bucket (not cumulative) plus one for +Inf
        self._counts = {g: [0] * (len(self.buckets_s) + 1) for g in GENERATIONS}
        self._sums = dict.fromkeys(GENERATIONS, 0.0)

    def observe(self, generation: int, seconds: float) -> None:
        assert generation in self._counts, f"CPython has generations 0-2, not {generation}"
        counts = self._counts[generation]
        for index, bound in enumerate(self.buckets_s):
            if seconds <= bound:
                counts[index] += 1
                break
        else:
            counts[-1] += 1
        self._sums[generation] += max(0.0, seconds)

    def count(self, generation: int) -> int:
        return sum(self._counts[generation])

    def cumulative(self, generation: int) -> list[tuple[str, int]]:
        """Prometheus' (le, cumulative count) pairs, +Inf last."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*map(str, self.buckets_s), "+Inf"), self._counts[generation],
                            strict=True):
            running += n
            out.append((bound, running))
        return out

    def sum_s(self, generation: int) -> float:
        return self._sums[generation]


class GcPauses(Collector):
    """Times each collection through `gc.callbacks`; a prometheus collector of the results.

    The callback runs with the GIL held, at the start and end of every collection, so it
    only reads the clock and adds to a few lists.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter,
                 frozen: Callable[[], int] = gc.get_freeze_count) -> None:
        self._clock = clock
        self._frozen = frozen
        self._started: float | None = None
        self.pauses = PauseHistogram()

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = self._clock()
        elif phase == "stop" and self._started is not None:
            self.pauses.observe(int(info["generation"]), self._clock() - self._started)
            self._started = None

    def install(self) -> None:
        if self.on_gc not in gc.callbacks:
            gc.callbacks.append(self.on_gc)

    def uninstall(self) -> None:
        if self.on_gc in gc.callbacks:
            gc.callbacks.remove(self.on_gc)

    def collect(self) -> Iterator[Metric]:
        histogram = HistogramMetricFamily(
            "raftka_gc_pause", "How long each garbage collection held the GIL (every thread "
            "of the broker stopped), by generation; 2 is a full collection",
            labels=["generation"], unit="seconds")
        for generation in GENERATIONS:
            histogram.add_metric([str(generation)], self.pauses.cumulative(generation),
                                 self.pauses.sum_s(generation))
        yield histogram
        yield GaugeMetricFamily(
            "raftka_gc_frozen_objects", "Objects gc.freeze() moved out of the collector's "
            "reach at start-up (never scanned by a collection)", value=self._frozen())
