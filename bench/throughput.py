"""Produce and consume throughput on local clusters, the figures in BENCHMARKS.md.

    python bench/throughput.py [--records 300000] [--size 100] [--json] [--tls] [--nodes 1,3]

Starts a 1-broker cluster (RF=1, acks=1) and a 3-broker cluster (RF=3, acks=all,
min.insync.replicas=2) in temporary directories and runs `raftka bench` against each: through
the SDK, and with pre-built batches / raw fetches (what the broker itself sustains).

--tls runs each cluster twice in the same sitting, plaintext and then with TLS on every
listener and between the brokers (`raftka cluster up --tls`'s setup: a local CA, P-256
certificates), so the cost of TLS is read side by side on the same noisy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cluster_timings import free_base_port  # noqa: E402
from raftka.client.cli_cluster import _wait_ready  # noqa: E402
from raftka.client.local_cluster import LocalCluster  # noqa: E402

# Every broker registered and unfenced before measuring (a loaded machine takes a while).
READY_TIMEOUT_S = 120.0


def raftka(*args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-m", "raftka", *args, "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
        env={**os.environ, **(env or {})},
    )
    if result.returncode != 0:
        raise RuntimeError(f"raftka {' '.join(args)} failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_cluster(nodes: int, records: int, size: int,
                tls: bool = False) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="raftka-throughput-") as root:
        local = LocalCluster(root)
        layout = local.create_or_load(nodes, free_base_port(), {}, tls=tls)
        env = local.client_tls().environment() if tls else {"RAFTKA_TLS": "0"}
        label = "TLS" if tls else "plaintext"
        processes = {n.broker_id: local.start_node(layout, n.broker_id, detach=True)
                     for n in layout.all_nodes()}
        try:
            os.environ.update(env)  # this process's own readiness checks too
            _wait_ready(layout, local, processes, READY_TIMEOUT_S)
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
                    env=env,
                )
                row.update(nodes=nodes, replication_factor=nodes, tls=tls)
                rows.append(row)
                print(
                    f"  {nodes} node(s) {label} produce {mode}: {row['records_per_s']:,} rec/s",
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
                    env=env,
                )
                row.update(nodes=nodes, replication_factor=nodes, tls=tls)
                rows.append(row)
                print(
                    f"  {nodes} node(s) {label} consume {mode}: {row['records_per_s']:,} rec/s",
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
    parser.add_argument("--tls", action="store_true",
                        help="also run each cluster with TLS, right after its plaintext run")
    parser.add_argument("--nodes", default="1,3", help="cluster sizes to run (default 1,3)")
    args = parser.parse_args()
    rows = []
    for nodes in (int(n) for n in args.nodes.split(",")):
        for tls in ((False, True) if args.tls else (False,)):
            rows += run_cluster(nodes, args.records, args.size, tls)
    if args.json:
        print(json.dumps(rows))
        return 0
    print(
        f"{'nodes':>5} {'RF':>3} {'acks':>4} {'TLS':>3} {'bench':<8} {'mode':<8} "
        f"{'records/s':>11} {'MB/s':>7}"
    )
    for row in rows:
        print(
            f"{row['nodes']:>5} {row['replication_factor']:>3} {row.get('acks', '-'):>4} "
            f"{'yes' if row['tls'] else 'no':>3} "
            f"{row['benchmark']:<8} {row['mode']:<8} {row['records_per_s']:>11,} "
            f"{row['mb_per_s']:>7}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
