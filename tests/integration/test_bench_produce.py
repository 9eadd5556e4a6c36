"""`raftka bench produce --mode batches` on both RPCs, against a real broker: every batch it
reports as sent is stored (a raw fetch reads them all back), so its figure counts records
the broker acknowledged. Timing figures are never asserted, only their presence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def bench(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "raftka", "bench", *args, "--json"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("rpc", ["unary", "stream"])
def test_pre_built_batches_are_all_stored(broker, rpc: str) -> None:
    topic = f"bench-{rpc}"
    produced = bench("produce", "--bootstrap", broker.bootstrap, "--topic", topic,
                     "--mode", "batches", "--rpc", rpc, "--records", "20000",
                     "--batch-size", "16384", "--acks", "1", "--partitions", "2",
                     "--replication-factor", "1")
    assert produced["records"] >= 20000 and produced["records_per_s"] > 0

    read = bench("consume", "--bootstrap", broker.bootstrap, "--topic", topic,
                 "--mode", "raw", "--records", str(produced["records"]))
    assert read["records"] == produced["records"]


def test_a_refused_batch_fails_the_stream_run_with_the_brokers_reason(broker) -> None:
    """23 batches, 4 in flight: the run stops sending at the first refusal and returns
    (it hung here once, waiting for a permit the stopped loop held)."""
    done = subprocess.run(
        [sys.executable, "-m", "raftka", "bench", "produce", "--bootstrap", broker.bootstrap,
         "--topic", "bench-refused", "--mode", "batches", "--rpc", "stream", "--records",
         "400000", "--batch-size", "2000000", "--acks", "1", "--partitions", "1",
         "--replication-factor", "1", "--json"],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "MESSAGE_TOO_LARGE" in done.stderr and "max.message.bytes" in done.stderr, done.stderr


def test_the_switch_interval_is_applied_reported_and_bounded(broker) -> None:
    produced = bench("produce", "--bootstrap", broker.bootstrap, "--topic", "bench-switch",
                     "--mode", "sdk", "--records", "2000", "--acks", "1", "--partitions", "1",
                     "--replication-factor", "1", "--switch-interval-ms", "0.5")
    assert produced["switch_interval_ms"] == 0.5 and produced["records"] == 2000

    done = subprocess.run(
        [sys.executable, "-m", "raftka", "bench", "produce", "--bootstrap", broker.bootstrap,
         "--switch-interval-ms", "0"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode != 0
    assert "--switch-interval-ms must be 0.1 to 100 ms, got 0" in done.stderr, done.stderr


def test_cpu_pins_the_bench_process_and_reports_it(broker) -> None:
    """--cpu: the whole process (so every thread the producer and consumer start) runs on
    the CPUs given; a CPU it may not use is refused by name before anything is sent."""
    from raftka import cpuset

    cpu = min(cpuset.allowed_cpus())
    produced = bench("produce", "--bootstrap", broker.bootstrap, "--topic", "bench-cpu",
                     "--mode", "sdk", "--records", "2000", "--acks", "1", "--partitions", "1",
                     "--replication-factor", "1", "--cpu", str(cpu))
    assert produced["cpus"] == str(cpu) and produced["records"] == 2000
    read = bench("consume", "--bootstrap", broker.bootstrap, "--topic", "bench-cpu",
                 "--records", "2000", "--cpu", str(cpu))
    assert read["cpus"] == str(cpu) and read["records"] == 2000

    outside = max(cpuset.allowed_cpus()) + 1
    done = subprocess.run(
        [sys.executable, "-m", "raftka", "bench", "produce", "--bootstrap", broker.bootstrap,
         "--cpu", str(outside)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode != 0
    assert f"--cpu={outside}: CPU {outside} is not one this process may use" in done.stderr
