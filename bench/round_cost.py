"""CPU per produce round: one acks=all record at a time, per broker, across source trees.

    python bench/round_cost.py [--tree DIR ...] [--runs 5] [--sends 1500] [--json]

Why: at a fixed record rate, latency is set by how busy the two cores are, and the busy time
is mostly per produce *round* (a Produce request, two follower fetches answered, two
follower appends, the high watermark moved, the answer), not per record. One synchronous
send is one round, so CPU per send is CPU per round. For each tree (default: this one) a
fresh 3-broker cluster (RF=3, min.insync.replicas=2, one partition) runs `--sends` sends
after a warm-up; the trees alternate `--runs` times (the machine is shared and noisy:
compare medians of one sitting). Reported per run: milliseconds per send (wall), each
broker's CPU ms per send (/proc/PID/stat utime+stime, before and after), and the requests
the leader answered per send (its Prometheus counters), which says what a round is made of.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Sends before the measured ones: connections, metadata and the topic settle.
WARMUP_SENDS = 200
# Longest wait for one acknowledgement (s): a stuck cluster fails the run, not hangs it.
SEND_TIMEOUT_S = 10.0
REQUESTS_METRIC = "kafka_network_requestmetrics_requests_total"


def request_counts(metrics_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(REQUESTS_METRIC):
            name, value = line.rsplit(" ", 1)
            counts[name[len(REQUESTS_METRIC):]] = float(value)
    return counts


def one_run(tree: Path, sends: int) -> dict[str, Any]:
    """A cluster from `tree`, `sends` synchronous sends, the figures; the cluster stopped."""
    env = {**os.environ, "PYTHONPATH": str(tree)}  # its raftka, and its brokers' too
    done = subprocess.run([sys.executable, __file__, "--measure", str(sends)], env=env,
                          capture_output=True, text=True, cwd=tree)
    if done.returncode != 0:
        raise RuntimeError(f"round_cost run on {tree} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(sends: int) -> dict[str, Any]:
    """Inside a process whose `raftka` is the tree measured."""
    from bench.cluster_timings import free_base_port
    from bench.sdk_compare import process_cpu_s, wait_for_brokers
    from raftka import Admin, Producer
    from raftka.client.admin import NewTopic
    from raftka.client.local_cluster import LocalCluster

    with tempfile.TemporaryDirectory(prefix="raftka-round-cost-") as scratch:
        local = LocalCluster(Path(scratch) / "raftka")
        layout = local.create_or_load(3, free_base_port(), {})
        processes: dict[int, tuple[Any, subprocess.Popen[bytes]]] = {}
        try:
            for node in layout.all_nodes():
                local.node_dir(node.broker_id).mkdir(parents=True, exist_ok=True)
                with open(local.log_path(node.broker_id), "ab") as log:
                    processes[node.broker_id] = (node, subprocess.Popen(
                        local.command(layout, node.broker_id), stdout=log,
                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            wait_for_brokers(layout.bootstrap, 3)
            with Admin(layout.bootstrap) as admin:
                admin.create_topics([NewTopic("round-cost", 1, 3)])
                deadline = time.monotonic() + 30
                while True:
                    partition = admin.describe_topic("round-cost").partitions[0]
                    if len(partition.isr) == 3 or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
            with Producer(layout.bootstrap, acks="all", linger_ms=0) as producer:
                for _ in range(WARMUP_SENDS):
                    producer.send("round-cost", b"x" * 100).get(SEND_TIMEOUT_S)
                leader_node = processes[partition.leader_id][0]
                counts_before = request_counts(leader_node.metrics_port)
                cpu_before = {b: process_cpu_s(p.pid) for b, (_, p) in processes.items()}
                started = time.perf_counter()
                for _ in range(sends):
                    producer.send("round-cost", b"x" * 100).get(SEND_TIMEOUT_S)
                elapsed = time.perf_counter() - started
                cpu_after = {b: process_cpu_s(p.pid) for b, (_, p) in processes.items()}
                counts_after = request_counts(leader_node.metrics_port)
        finally:
            for _, process in processes.values():
                process.terminate()
            for _, process in processes.values():
                process.wait(30)
    leader = partition.leader_id
    followers = sorted(b for b in cpu_before if b != leader)
    per_send = {b: (cpu_after[b] - cpu_before[b]) * 1000 / sends for b in cpu_before}
    requests = {name: round((value - counts_before.get(name, 0.0)) / sends, 2)
                for name, value in counts_after.items()
                if value - counts_before.get(name, 0.0) >= sends / 10}
    return {
        "ms_per_send": round(elapsed * 1000 / sends, 3),
        "leader_cpu_ms_per_send": round(per_send[leader], 3),
        "follower_cpu_ms_per_send": [round(per_send[b], 3) for b in followers],
        "leader_requests_per_send": requests,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, action="append",
                        help="source tree to measure (repeat to compare); default: this one")
    parser.add_argument("--runs", type=int, default=5, help="alternations of the trees")
    parser.add_argument("--sends", type=int, default=1500, help="measured sends per run")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:  # a run's own process, importing the measured tree
        print(json.dumps(measure(args.measure)))
        return 0
    if args.runs < 1 or args.sends < 1:
        parser.error("--runs and --sends must be at least 1")
    trees = [t.resolve() for t in (args.tree or [ROOT])]
    for tree in trees:
        if not (tree / "raftka" / "__init__.py").exists():
            parser.error(f"--tree {tree}: not a Raftka source tree (no raftka/__init__.py)")
    results: dict[str, list[dict[str, Any]]] = {str(t): [] for t in trees}
    for run in range(1, args.runs + 1):
        for tree in trees:
            figures = one_run(tree, args.sends)
            results[str(tree)].append(figures)
            print(f"[round_cost] run {run}/{args.runs} {tree}: {figures['ms_per_send']} ms/send,"
                  f" leader {figures['leader_cpu_ms_per_send']} CPU ms,"
                  f" followers {figures['follower_cpu_ms_per_send']} CPU ms",
                  file=sys.stderr, flush=True)
    summary = {
        tree: {
            "median_ms_per_send": statistics.median(r["ms_per_send"] for r in runs),
            "median_leader_cpu_ms": statistics.median(r["leader_cpu_ms_per_send"] for r in runs),
            "median_follower_cpu_ms": statistics.median(
                c for r in runs for c in r["follower_cpu_ms_per_send"]),
            "leader_requests_per_send": runs[-1]["leader_requests_per_send"],
            "runs": runs,
        }
        for tree, runs in results.items()
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{'tree':<40} {'ms/send':>8} {'leader CPU ms':>14} {'follower CPU ms':>16}")
        for tree, row in summary.items():
            print(f"{tree:<40} {row['median_ms_per_send']:>8.3f} "
                  f"{row['median_leader_cpu_ms']:>14.3f} {row['median_follower_cpu_ms']:>16.3f}")
        print("(medians of the runs; requests per send at the leader: "
              f"{next(iter(summary.values()))['leader_requests_per_send']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
