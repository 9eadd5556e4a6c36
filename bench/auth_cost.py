"""What the cluster secret costs: a metadata commit and replication throughput, with the
secret (authenticated Raft frames and internal calls) and without (--allow-no-cluster-secret),
side by side in one run, rounds alternating so the machine's noise falls on both alike.

    python bench/auth_cost.py [--rounds 3] [--topics 60] [--records 300000] [--json]

metadata_commit_ms  one CreateTopics (1 partition, RF 3) sent to the controller: a Raft commit
                    plus every broker applying it; median over --topics sequential creates
replication_rec_s   `raftka bench produce --mode batches` (pre-built 100-byte-record batches,
                    acks=all, RF 3, 3 partitions): every record is fetched by two followers
                    with signed replica fetches
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from raftka.proto.raftka.v1 import admin_pb2, admin_pb2_grpc  # noqa: E402
from tests.harness import LocalCluster  # noqa: E402

SETTINGS = {"default.replication.factor": "3", "min.insync.replicas": "2"}


def start(root: Path, secret: bool) -> LocalCluster:
    cluster = LocalCluster(root, 3, dict(SETTINGS))
    if not secret:
        for broker in cluster.brokers.values():
            broker.secret_file = None
            broker.settings["allow.no.cluster.secret"] = "true"
    cluster.start()
    cluster.wait_ready(timeout_s=60)
    return cluster


def metadata_commit_ms(cluster: LocalCluster, topics: int, label: str) -> float:
    controller = cluster.brokers[cluster.describe().controller_id]
    times = []
    with grpc.insecure_channel(controller.address) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        for i in range(topics):
            request = admin_pb2.CreateTopicsRequest(
                topics=[admin_pb2.NewTopic(name=f"{label}-{i}", num_partitions=1)]
            )
            began = time.perf_counter()
            reply = stub.CreateTopics(request, timeout=10)
            times.append((time.perf_counter() - began) * 1000)
            assert reply.topics[0].error_code == 0, reply
    return statistics.median(times)


def replication_rec_s(cluster: LocalCluster, records: int, label: str) -> float:
    result = subprocess.run(
        [sys.executable, "-m", "raftka", "bench", "produce", "--bootstrap", cluster.bootstrap,
         "--topic", f"repl-{label}", "--records", str(records), "--acks", "all",
         "--partitions", "3", "--replication-factor", "3", "--mode", "batches", "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=600, check=True,
    )
    return float(json.loads(result.stdout.strip().splitlines()[-1])["records_per_s"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--topics", type=int, default=60)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {
        name: {"metadata_commit_ms": [], "replication_rec_s": []}
        for name in ("with_secret", "without_secret")
    }
    for round_number in range(args.rounds):
        for name in ("with_secret", "without_secret"):
            with tempfile.TemporaryDirectory(prefix="raftka-auth-cost-") as root:
                cluster = start(Path(root), secret=name == "with_secret")
                try:
                    label = f"r{round_number}"
                    commit = metadata_commit_ms(cluster, args.topics, label)
                    rate = replication_rec_s(cluster, args.records, label)
                finally:
                    cluster.stop_all()
            results[name]["metadata_commit_ms"].append(commit)
            results[name]["replication_rec_s"].append(rate)
            print(f"round {round_number + 1} {name}: commit {commit:.2f} ms, "
                  f"replication {rate:,.0f} rec/s", file=sys.stderr, flush=True)
    summary = {
        name: {metric: round(statistics.median(values), 2) for metric, values in row.items()}
        for name, row in results.items()
    }
    if args.json:
        print(json.dumps({"rounds": args.rounds, "median": summary, "raw": results}))
    else:
        for name, row in summary.items():
            print(f"{name:15} metadata commit {row['metadata_commit_ms']:7.2f} ms   "
                  f"replication {row['replication_rec_s']:>12,.0f} rec/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
