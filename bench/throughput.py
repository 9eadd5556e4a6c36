"""Produce and consume throughput on local clusters, the figures in BENCHMARKS.md.

    python bench/throughput.py [--records 300000] [--size 100] [--json]

Starts a 1-broker cluster (RF=1, acks=1) and a 3-broker cluster (RF=3, acks=all,
min.insync.replicas=2) in temporary directories and runs `raftka bench` against each: through
the SDK, and with pre-built batches / raw fetches (what the broker itself sustains).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cluster_timings import free_base_port  # noqa: E402
from raftka.client.local_cluster import LocalCluster  # noqa: E402


def raftka(*args: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-m", "raftka", *args, "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    if result.returncode != 0:
        raise RuntimeError(f"raftka {' '.join(args)} failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_cluster(nodes: int, records: int, size: int) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="raftka-throughput-") as root:
        local = LocalCluster(root)
        layout = local.create_or_load(nodes, free_base_port(), {})
        for node in layout.all_nodes():
            local.start_node(layout, node.broker_id, detach=True)
        try:
            time.sleep(3)
            bootstrap = layout.bootstrap
            acks = "all" if nodes == 3 else "1"
            rf = str(nodes)
            rows = []
            for mode in ("sdk", "batches"):
                topic = f"bench-{mode}"
                row = raftka(
                    "bench",
                    "produce",
                    "--bootstrap",
                    bootstrap,
                    "--topic",
                    topic,
                    "--records",
                    str(records),
                    "--size",
                    str(size),
                    "--acks",
                    acks,
                    "--partitions",
                    "3",
                    "--replication-factor",
                    rf,
                    "--mode",
                    mode,
                )
                row.update(nodes=nodes, replication_factor=nodes)
                rows.append(row)
                print(
                    f"  {nodes} node(s) produce {mode}: {row['records_per_s']:,} rec/s",
                    file=sys.stderr,
                    flush=True,
                )
            for mode in ("sdk", "raw"):
                row = raftka(
                    "bench",
                    "consume",
                    "--bootstrap",
                    bootstrap,
                    "--topic",
                    "bench-batches",
                    "--records",
                    str(records),
                    "--mode",
                    mode,
                )
                row.update(nodes=nodes, replication_factor=nodes)
                rows.append(row)
                print(
                    f"  {nodes} node(s) consume {mode}: {row['records_per_s']:,} rec/s",
                    file=sys.stderr,
                    flush=True,
                )
            return rows
        finally:
            local.stop_all(layout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = run_cluster(1, args.records, args.size) + run_cluster(3, args.records, args.size)
    if args.json:
        print(json.dumps(rows))
        return 0
    print(
        f"{'nodes':>5} {'RF':>3} {'acks':>4} {'bench':<8} {'mode':<8} {'records/s':>11} {'MB/s':>7}"
    )
    for row in rows:
        print(
            f"{row['nodes']:>5} {row['replication_factor']:>3} {row.get('acks', '-'):>4} "
            f"{row['benchmark']:<8} {row['mode']:<8} {row['records_per_s']:>11,} "
            f"{row['mb_per_s']:>7}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
