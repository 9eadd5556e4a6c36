"""`cpu.affinity`: a real broker process pinned to its CPU, every thread of it, and a CPU it
may not use refused at start-up with the reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raftka import cpuset
from tests.harness import LocalCluster, wait_for

pytestmark = pytest.mark.integration


def thread_cpus(pid: int) -> dict[int, frozenset[int]]:
    """Every thread of `pid` -> the CPUs it may run on (from /proc)."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                found[int(tid)] = cpuset.parse_cpu_list(line.split(":", 1)[1])
    return found


def test_auto_pins_every_thread_of_the_broker_to_the_cpu_its_id_picks(tmp_path):
    allowed = cpuset.allowed_cpus()
    cluster = LocalCluster(tmp_path, 1, {"cpu.affinity": "auto"})
    try:
        cluster.start()
        cluster.wait_ready()
        broker = cluster.brokers[1]
        expected = frozenset({cpuset.auto_cpu(allowed, 1)})
        threads = thread_cpus(broker.pid)
        assert len(threads) > 5  # gRPC's, Raft's, the event loop's: all started after
        assert set(threads.values()) == {expected}
        assert f"pinned to CPU {cpuset.format_cpu_list(expected)} (cpu.affinity=auto)" in (
            broker.log_text())
    finally:
        cluster.stop_all()


def test_a_cpu_the_broker_may_not_use_is_refused_at_start_up(tmp_path):
    outside = max(cpuset.allowed_cpus()) + 1
    cluster = LocalCluster(tmp_path, 1, {"cpu.affinity": str(outside)})
    try:
        cluster.start()
        broker = cluster.brokers[1]
        wait_for(lambda: not broker.running, 30, "the broker to exit")
        assert broker.process is not None and broker.process.returncode == 2
        assert f"cpu.affinity={outside}: CPU {outside} is not one this process may use" in (
            broker.log_text())
    finally:
        cluster.stop_all()
