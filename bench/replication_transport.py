"""Replication over gRPC Fetch vs the replication stream, side by side in one invocation.

    nice -n 10 python bench/replication_transport.py [--records 3000000] [--sends 300]
        [--rounds 1] [--json]

Each round starts the same local 3-broker cluster (`raftka cluster up`'s layout: RF=3,
min.insync.replicas=2) once with `--set replication.transport=grpc` and once with `stream`,
in a fresh directory each, and measures on it:

* `raftka bench produce --mode batches --acks all --partitions 3 --replication-factor 3`
  (pre-built 256 KiB batches) and each broker's CPU time (utime + stime from
  /proc/PID/stat) around that run, as CPU-seconds per million records;
* the single-record acks=all (and, for reference, acks=1) synchronous send: Producer(acks,
  linger_ms=0), send(...).get() `--sends` times after 20 warm-up sends, p50/p99 in ms.

Why: issue 17 part 1 — a follower's fetch over gRPC costs each broker most of its CPU in
gRPC's machinery, and acks=all waits on two such hops per round.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.sync_send_latency import sdk_sends  # noqa: E402
from raftka.client.admin import Admin  # noqa: E402
from raftka.client.cli_cluster import _wait_ready  # noqa: E402
from raftka.client.local_cluster import LocalCluster  # noqa: E402
from tests.harness import free_port_block  # noqa: E402

READY_TIMEOUT_S = 120.0
PORTS_PER_CLUSTER = 30  # three brokers, PORT_STRIDE 10 apart
TRANSPORTS = ("grpc", "stream")
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process so far (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "p50": round(statistics.median(ordered), 2),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
    }


def sync_sends(bootstrap: str, topic: str, acks: str, sends: int) -> dict[str, float]:
    return percentiles(sdk_sends(bootstrap, topic, acks, sends))


def bench_produce(bootstrap: str, records: int) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-m", "raftka", "bench", "produce", "--bootstrap", bootstrap,
         "--topic", "bench-batches", "--records", str(records), "--mode", "batches",
         "--acks", "all", "--partitions", "3", "--replication-factor", "3", "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=1800,
        env={**os.environ, "RAFTKA_TLS": "0"},
    )
    if result.returncode != 0:
        raise RuntimeError(f"raftka bench produce failed: {result.stderr[-2000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def run_transport(transport: str, records: int, sends: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix=f"raftka-repl-{transport}-") as root:
        local = LocalCluster(root)
        settings = {"replication.transport": transport, "min.insync.replicas": "2"}
        layout = local.create_or_load(3, free_port_block(PORTS_PER_CLUSTER), settings)
        processes = {n.broker_id: local.start_node(layout, n.broker_id, detach=True)
                     for n in layout.all_nodes()}
        try:
            os.environ["RAFTKA_TLS"] = "0"
            _wait_ready(layout, local, processes, READY_TIMEOUT_S)
            bootstrap = layout.bootstrap
            with Admin(bootstrap) as admin:
                admin.create_topic("latency", 1, 3)
            time.sleep(2.0)  # every follower fetching before the first timed send
            latency = {acks: sync_sends(bootstrap, "latency", acks, sends)
                       for acks in ("1", "all")}
            before = {i: cpu_seconds(p.pid) for i, p in processes.items()}
            produced = bench_produce(bootstrap, records)
            used = {i: cpu_seconds(p.pid) - before[i] for i, p in processes.items()}
        finally:
            local.stop_all(layout)
    per_million = {i: round(s / records * 1e6, 3) for i, s in used.items()}
    row = {
        "transport": transport,
        "records": records,
        "records_per_s": produced["records_per_s"],
        "mb_per_s": produced.get("mb_per_s"),
        "broker_cpu_s_per_million": per_million,
        "mean_broker_cpu_s_per_million": round(statistics.mean(per_million.values()), 3),
        "acks_1_ms": latency["1"],
        "acks_all_ms": latency["all"],
    }
    print(f"  {transport}: {row['records_per_s']:,} rec/s, "
          f"{row['mean_broker_cpu_s_per_million']} CPU-s/M per broker, "
          f"acks=all p50 {latency['all']['p50']} ms", file=sys.stderr, flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3_000_000)
    parser.add_argument("--sends", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=1,
                        help="grpc then stream, this many times (alternating)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = [run_transport(transport, args.records, args.sends)
            for _ in range(args.rounds) for transport in TRANSPORTS]
    load_after = os.getloadavg()
    if args.json:
        print(json.dumps({"rows": rows, "loadavg_before": load_before,
                          "loadavg_after": load_after}))
        return 0
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(f"{'transport':<9} {'records/s':>10} {'CPU-s/M per broker (1,2,3)':>28} "
          f"{'mean':>6} {'acks=1 p50/p99':>15} {'acks=all p50/p99':>17}")
    for row in rows:
        cpu = row["broker_cpu_s_per_million"]
        assert isinstance(cpu, dict)
        one, every = row["acks_1_ms"], row["acks_all_ms"]
        assert isinstance(one, dict) and isinstance(every, dict)
        print(f"{row['transport']:<9} {row['records_per_s']:>10,} "
              f"{', '.join(str(cpu[i]) for i in sorted(cpu)):>28} "
              f"{row['mean_broker_cpu_s_per_million']:>6} "
              f"{one['p50']:>7}/{one['p99']:<7} {every['p50']:>8}/{every['p99']:<8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
