"""What fsync-before-acknowledging costs: one 3-broker cluster (RF 3, acks=all), a topic with
flush.messages=1 beside one with the default (Kafka's: flush on roll / flush.ms), produced
to alternately in one run.

    python bench/fsync_ack_cost.py [--rounds 3] [--records 200000] [--json]

Per round and topic: `raftka bench produce` with pre-built batches (--mode batches, 4
requests in flight) and through the SDK (--mode sdk), records/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raftka import Admin  # noqa: E402
from tests.harness import LocalCluster  # noqa: E402

SETTINGS = {"default.replication.factor": "3", "min.insync.replicas": "2"}
TOPICS = {"fsync_before_ack": {"flush.messages": "1"}, "default": {}}


def produce(bootstrap: str, topic: str, records: int, mode: str) -> float:
    result = subprocess.run(
        [sys.executable, "-m", "raftka", "bench", "produce", "--bootstrap", bootstrap,
         "--topic", topic, "--records", str(records), "--acks", "all", "--mode", mode,
         "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=900, check=True,
    )
    return float(json.loads(result.stdout.strip().splitlines()[-1])["records_per_s"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows: dict[str, list[float]] = {f"{t}/{m}": [] for t in TOPICS for m in ("batches", "sdk")}
    with tempfile.TemporaryDirectory(prefix="raftka-fsync-ack-") as root:
        cluster = LocalCluster(Path(root), 3, dict(SETTINGS))
        cluster.start()
        try:
            cluster.wait_ready(timeout_s=60)
            with Admin(cluster.bootstrap) as admin:
                for name, configs in TOPICS.items():
                    admin.create_topic(name, num_partitions=3, configs=configs)
            for round_number in range(args.rounds):
                for mode in ("batches", "sdk"):
                    for name in TOPICS:
                        rate = produce(cluster.bootstrap, name, args.records, mode)
                        rows[f"{name}/{mode}"].append(rate)
                        print(f"round {round_number + 1} {name} {mode}: {rate:,.0f} rec/s",
                              file=sys.stderr, flush=True)
        finally:
            cluster.stop_all()
    summary = {key: round(statistics.median(values)) for key, values in rows.items()}
    if args.json:
        print(json.dumps({"rounds": args.rounds, "median_records_per_s": summary, "raw": rows}))
    else:
        for key, value in summary.items():
            print(f"{key:28} {value:>12,} records/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
