"""The Overview's throughput chart: records/s and bytes/s in and out of the whole cluster,
from the brokers' own Prometheus counters (broker/metrics.py), so the chart reads the
cluster and no second store.

Why /metrics and not sampled end offsets: end offsets give records in only; bytes in, and
anything out (what consumers read), exist only as the brokers' counters. Each broker counts
what it appended as leader and served to consumers, so the cluster's rate is the sum over
brokers. A counter that goes down (a broker restarted) counts from 0 again, as Prometheus'
rate() does; a broker that does not answer a scrape is left out of that interval.

Pure: the scraped texts and the time come in as arguments (the server scrapes).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# The counters summed (sample names as the text format spells them), by series name.
SERIES = {
    "records_in": "kafka_server_brokertopicmetrics_messagesin_total",
    "bytes_in": "kafka_server_brokertopicmetrics_bytesin_total",
    "records_out": "raftka_brokertopicmetrics_messagesout_total",
    "bytes_out": "kafka_server_brokertopicmetrics_bytesout_total",
}
# Points the chart keeps (one per sample interval; 150 x 2 s = 5 minutes).
POINTS_KEPT_MAX = 150


def counter_totals(text: str) -> dict[str, float]:
    """One broker's /metrics text -> each series' counter summed over topics."""
    wanted = {sample: series for series, sample in SERIES.items()}
    totals = dict.fromkeys(SERIES, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series = wanted.get(sample.name)
            if series is not None:
                totals[series] += sample.value
    return totals


@dataclass(frozen=True, slots=True)
class Point:
    ts_ms: int
    rates: dict[str, float]  # per second, by series name

    def to_json(self) -> dict[str, Any]:
        return {"ts_ms": self.ts_ms, **{k: round(v, 3) for k, v in self.rates.items()}}


class ThroughputSeries:
    """Rates between consecutive scrapes, per broker then summed."""

    def __init__(self, kept_max: int = POINTS_KEPT_MAX) -> None:
        self._last: dict[str, tuple[int, dict[str, float]]] = {}  # address -> (ts, totals)
        self.points: deque[Point] = deque(maxlen=kept_max)

    def add(self, now_ms: int, scraped: dict[str, str | None]) -> Point | None:
        """`scraped`: address -> its /metrics text (None: it did not answer). Returns the
        new point, or None on the first scrape (a rate needs two)."""
        rates = dict.fromkeys(SERIES, 0.0)
        any_rate = False
        for address, text in scraped.items():
            if text is None:
                self._last.pop(address, None)
                continue
            totals = counter_totals(text)
            before = self._last.get(address)
            self._last[address] = (now_ms, totals)
            if before is None or now_ms <= before[0]:
                continue
            seconds = (now_ms - before[0]) / 1000
            any_rate = True
            for series, value in totals.items():
                moved = value - before[1][series]
                rates[series] += (value if moved < 0 else moved) / seconds  # reset: from 0
        if not any_rate:
            return None
        point = Point(now_ms, rates)
        self.points.append(point)
        return point

    def to_json(self) -> list[dict[str, Any]]:
        return [p.to_json() for p in self.points]
