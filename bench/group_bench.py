"""Consumer group figures on a local 3-broker cluster (default group settings unless --set).

    python bench/group_bench.py [--trials 5] [--records 300000] [--json]

  rebalance_after_kill_ms  kill -9 of one of 3 members -> the other 2 own all 6 partitions
  rebalance_after_join_ms  a 3rd member starts -> 3 members own 2 partitions each
  group_consume            3 member processes (2 partitions each, already balanced) read N
                           records (100 bytes) of a 6-partition RF=3 topic: records/s from
                           the start of production to the last record read
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cluster_timings import Bench  # noqa: E402
from raftka.client.admin import Admin  # noqa: E402

MEMBER = """
import sys, time
from raftka import Consumer
bootstrap, topic, group, quota = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
consumer = Consumer(bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                    max_poll_records=10000)
consumer.subscribe([topic])
count = 0
while quota <= 0 or count < quota:
    for records in consumer.poll(timeout_ms=500).values():
        count += len(records)
    print(count, time.time(), flush=True)
"""


def spawn(bootstrap: str, topic: str, group: str, quota: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", MEMBER, bootstrap, topic, group, str(quota)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)


def ownership(admin: Admin, group: str) -> list[int]:
    description = admin.groups.describe_group(group)
    counts = [sum(len(t.partitions) for t in m.assignment) for m in description.members]
    owned = [(t.topic, p) for m in description.members for t in m.assignment
             for p in t.partitions]
    return sorted(counts) if len(owned) == len(set(owned)) else []


def wait_split(admin: Admin, group: str, expected: list[int], timeout_s: float = 120) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if ownership(admin, group) == expected:
                return time.monotonic()
        except Exception:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"group {group} never reached {expected}")


def rebalance_trials(bench: Bench, trials: int) -> dict[str, dict[str, object]]:
    bootstrap = bench.layout.bootstrap
    kill_ms: list[float] = []
    join_ms: list[float] = []
    with Admin(bootstrap) as admin:
        admin.create_topic("rebalance", num_partitions=6, replication_factor=3)
        for trial in range(trials):
            group = f"rb-{trial}"
            members = [spawn(bootstrap, "rebalance", group) for _ in range(2)]
            try:
                wait_split(admin, group, [3, 3])
                members.append(spawn(bootstrap, "rebalance", group))
                joined = time.monotonic()
                join_ms.append((wait_split(admin, group, [2, 2, 2]) - joined) * 1000)
                os.kill(members[0].pid, signal.SIGKILL)
                killed = time.monotonic()
                kill_ms.append((wait_split(admin, group, [3, 3]) - killed) * 1000)
                print(f"  trial {trial + 1}: join {join_ms[-1]:.0f} ms, "
                      f"kill {kill_ms[-1]:.0f} ms", file=sys.stderr, flush=True)
            finally:
                for member in members:
                    if member.poll() is None:
                        member.kill()
                    member.wait()
    return {"rebalance_after_join_ms": summary(join_ms),
            "rebalance_after_kill_ms": summary(kill_ms)}


def consume_throughput(bench: Bench, records: int) -> dict[str, object]:
    bootstrap = bench.layout.bootstrap
    members = []
    with Admin(bootstrap) as admin:
        admin.create_topic("group-read", num_partitions=6, replication_factor=3)
        members = [spawn(bootstrap, "group-read", "readers") for _ in range(3)]
        wait_split(admin, "readers", [2, 2, 2])
    started = time.time()
    subprocess.Popen([sys.executable, "-m", "raftka", "bench", "produce", "--bootstrap",
                      bootstrap, "--topic", "group-read", "--records", str(records),
                      "--mode", "batches", "--partitions", "6", "--json"], cwd=ROOT,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    totals = [0, 0, 0]
    finished = [started] * 3
    try:
        deadline = time.monotonic() + 300
        while sum(totals) < records and time.monotonic() < deadline:
            for i, member in enumerate(members):
                line = member.stdout.readline() if member.stdout else ""
                if line:
                    count, at = line.split()
                    if int(count) != totals[i]:
                        totals[i], finished[i] = int(count), float(at)
    finally:
        for member in members:
            member.kill()
            member.wait()
    seconds = max(finished) - started
    return {"records": sum(totals), "seconds": round(seconds, 2),
            "records_per_s": round(sum(totals) / seconds), "per_member": totals}


def summary(samples: list[float]) -> dict[str, object]:
    return {"median": round(statistics.median(samples), 1), "max": round(max(samples), 1),
            "samples": [round(s) for s in samples]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.set)
    with tempfile.TemporaryDirectory(prefix="raftka-groups-") as root:
        bench = Bench(Path(root), settings)
        try:
            bench.start()
            results: dict[str, object] = rebalance_trials(bench, args.trials)
            results["group_consume"] = consume_throughput(bench, args.records)
        finally:
            bench.stop()
    print(json.dumps(results) if args.json else json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
