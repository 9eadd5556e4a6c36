"""What syncing the Raft journal costs a metadata commit: the same 3-broker cluster with
metadata.log.fsync on (the default) and off, rounds alternating, one run.

    python bench/journal_fsync_cost.py [--rounds 3] [--topics 60] [--json]

metadata_commit_ms: median of --topics sequential CreateTopics (1 partition, RF 3) sent to
the controller; each is a Raft commit (synced on a majority with fsync on) plus every broker
applying it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.auth_cost import SETTINGS, metadata_commit_ms  # noqa: E402
from tests.harness import LocalCluster  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--topics", type=int, default=60)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, list[float]] = {"fsync_on": [], "fsync_off": []}
    for round_number in range(args.rounds):
        for name in results:
            with tempfile.TemporaryDirectory(prefix="raftka-fsync-cost-") as root:
                settings = {**SETTINGS, "metadata.log.fsync": str(name == "fsync_on").lower()}
                cluster = LocalCluster(Path(root), 3, settings)
                cluster.start()
                try:
                    cluster.wait_ready(timeout_s=60)
                    value = metadata_commit_ms(cluster, args.topics, f"r{round_number}")
                finally:
                    cluster.stop_all()
            results[name].append(value)
            print(f"round {round_number + 1} {name}: commit {value:.2f} ms", file=sys.stderr,
                  flush=True)
    summary = {name: round(statistics.median(v), 2) for name, v in results.items()}
    if args.json:
        print(json.dumps({"rounds": args.rounds, "median_ms": summary, "raw": results}))
    else:
        for name, value in summary.items():
            print(f"{name:10} metadata commit {value:7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
