"""bench/round_cost.py end to end, small: a real 3-broker cluster per run, a few synchronous
sends, and the figures each run must carry. Timings are never asserted, only their presence
and what a round is made of (one Produce, one Fetch per follower)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_one_run_reports_cpu_per_send_of_each_broker_and_the_rounds_requests():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "round_cost.py"), "--runs", "1", "--sends", "50",
         "--json"], capture_output=True, text=True, cwd=ROOT, timeout=170)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads(done.stdout).values()
    assert row["median_ms_per_send"] > 0 and row["median_leader_cpu_ms"] >= 0
    assert len(row["runs"][0]["follower_cpu_ms_per_send"]) == 2
    requests = row["leader_requests_per_send"]
    produce = next(v for k, v in requests.items() if 'request="Produce"' in k)
    fetch = next(v for k, v in requests.items()
                 if 'request="Fetch"' in k and 'protocol="replication"' in k)
    assert produce == 1.0
    assert 1.9 <= fetch <= 2.3  # a long poll that ran out meanwhile adds one now and then


def test_a_tree_that_is_not_raftka_is_refused_by_name(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "round_cost.py"), "--tree", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2 and f"--tree {tmp_path}" in done.stderr
