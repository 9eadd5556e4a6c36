"""deploy/grafana/raftka-dashboard.json queries only metrics a broker exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from raftka.broker.gc_pauses import GcPauses
from raftka.broker.metrics import BrokerMetrics, BrokerState

DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "raftka-dashboard.json"
METRIC_NAME = re.compile(r"\b(?:kafka|raftka|process)_[a-z0-9_]+")


class _Replica:
    def __init__(self) -> None:
        from raftka.broker.partition import TopicPartition

        self.tp = TopicPartition("t", 0)
        self.is_leader = True
        self.high_watermark = 5
        self.isr = self.replicas = [1]
        self.min_insync_replicas = 1


class _Image:
    topics: dict[str, object] = {}
    brokers: dict[int, object] = {}
    offset = 0


def exported_sample_names() -> set[str]:
    """Every sample name one broker's /metrics carries once each path has moved once."""
    metrics = BrokerMetrics()
    metrics.watch(BrokerState(
        broker_id=1, partitions=lambda: [_Replica()], image=_Image,
        is_controller=lambda: True, purgatory_size=lambda: 0,
        raft_status=lambda: {"term": 1, "commit_index": 1, "last_applied": 1, "leader_id": 1},
        fenced=lambda: False, committed_offsets=lambda: [("g", "t", 0, 1)],
    ))
    metrics.watch_gc(GcPauses())  # what broker/main.py adds in a broker process
    metrics.appended("t", 1, 10)
    metrics.served("t", 10, follower=False)
    metrics.served("t", 10, follower=True)
    metrics.messages_out.labels("t").inc()
    metrics.failed_produce.labels("t").inc()
    metrics.request_done("Produce", "grpc", 0.001, "NONE")
    metrics.isr_changed((1, 2), (1,))
    return {
        sample.name
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
    }


def queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_every_metric_the_dashboard_queries_is_exported():
    exported = exported_sample_names()
    asked = {name for expr in queries() for name in METRIC_NAME.findall(expr)}
    assert len(asked) >= 20  # the regex found the names (a check that cannot pass empty)
    missing = sorted(asked - exported)
    assert not missing, f"the dashboard queries metrics no broker exports: {missing}"


def test_the_dashboard_is_importable():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(panel["datasource"]["uid"] == "${DS_PROMETHEUS}" for panel in dashboard["panels"])
