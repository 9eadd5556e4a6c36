"""The Python SDK before and after a change, side by side on one cluster in one run.

    python bench/sdk_compare.py [--before-ref REF] [--records 200000] [--profile] [--json]

Why one run: this 2-core machine is shared and noisy, so figures from different sittings do
not compare. One 3-broker cluster (RF=3, acks=all, min.insync.replicas=2, 3 partitions) is
started from this tree; the client benchmarks (`raftka bench produce|consume`) then run
against it from two source trees: `before` (REF, exported with `git archive`) and `after`
(this tree), alternating, each on a topic of its own. The broker code is this tree's in both.

For each run it reports records/s and CPU seconds per million records: of the client (the
benchmark's process_time() when its tree reports it, else its whole rusage from wait4) and
of each broker (utime+stime from /proc/PID/stat, before and after).
With --profile each SDK benchmark runs once more under py-spy (not timed) and the top
functions by own time are printed: where the client's CPU goes.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cluster_timings import free_base_port  # noqa: E402
from raftka.client.local_cluster import ClusterLayout, LocalCluster  # noqa: E402

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
# py-spy samples per second for --profile.
PROFILE_RATE_HZ = 200
# Functions listed per profile.
PROFILE_TOP = 12
# Longest wait for the started brokers to register and be unfenced (s); a loaded machine
# takes far longer than the usual ~3 s.
CLUSTER_READY_TIMEOUT_S = 120.0


def export_tree(ref: str, into: Path) -> Path:
    """The source tree at `ref`, as files (git archive keeps the raftka/ symlinks)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def wait_for_brokers(
    bootstrap: str, count: int, timeout_s: float = CLUSTER_READY_TIMEOUT_S
) -> None:
    """Until the metadata lists `count` live brokers (or RuntimeError after `timeout_s`)."""
    from raftka.client.errors import RaftkaError
    from raftka.client.metadata import ClusterMetadata
    from raftka.client.transport import Connections, bootstrap_list

    connections = Connections()
    metadata = ClusterMetadata(bootstrap_list(bootstrap), connections)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            try:
                if len(metadata.refresh().brokers) >= count:
                    return
            except RaftkaError:
                pass
            time.sleep(0.5)
    finally:
        connections.close()
    raise RuntimeError(f"{count} brokers were not up within {timeout_s:.0f}s")


def process_cpu_s(pid: int) -> float:
    """utime + stime of a running process (s)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def broker_pids(local: LocalCluster, layout: ClusterLayout) -> dict[int, int]:
    pids = {}
    for node in layout.all_nodes():
        pid = local.pid_of(node.broker_id)
        if pid is None:
            raise RuntimeError(f"broker {node.broker_id} is not running")
        pids[node.broker_id] = pid
    return pids


def run_client(
    tree: Path, args: list[str], profile_to: Path | None = None
) -> tuple[dict[str, Any], float]:
    """Run `raftka bench ...` from `tree`: its JSON answer and its CPU seconds."""
    command = [sys.executable, "-m", "raftka", "bench", *args, "--json"]
    if profile_to is not None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        command = [spy, "record", "--format", "raw", "-r", str(PROFILE_RATE_HZ),
                   "-o", str(profile_to), "--", *command]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, cwd=tree, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode != 0:
        raise RuntimeError(f"raftka bench {' '.join(args)} failed: {stderr[-2000:]}")
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    return json.loads(lines[-1]), usage.ru_utime + usage.ru_stime


def measure(
    label: str,
    tree: Path,
    args: list[str],
    pids: dict[int, int],
) -> dict[str, Any]:
    before = {b: process_cpu_s(pid) for b, pid in pids.items()}
    row, client_cpu = run_client(tree, args)
    after = {b: process_cpu_s(pid) for b, pid in pids.items()}
    millions = row["records"] / 1e6
    row["tree"] = label
    # The benchmark's own CPU count (without interpreter start-up and imports), when the
    # tree's `raftka bench` reports it; else the whole process's.
    row["client_cpu_s_per_m"] = round(row.get("client_cpu_s", client_cpu) / millions, 2)
    row["broker_cpu_s_per_m"] = {
        str(b): round((after[b] - before[b]) / millions, 2) for b in pids
    }
    print(
        f"  {label:<6} {row['benchmark']:<7} {row['mode']:<8} {row['records_per_s']:>10,} rec/s"
        f"  client {row['client_cpu_s_per_m']} CPU-s/M  brokers {row['broker_cpu_s_per_m']}",
        file=sys.stderr,
        flush=True,
    )
    return row


def summarize_profile(path: Path, top: int = PROFILE_TOP) -> list[tuple[str, float]]:
    """Functions by share of samples in which they were the innermost frame (own time).
    Samples taken while importing modules (interpreter start-up, the same in both trees and
    no part of the per-record cost) are left out."""
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit() or "importlib._bootstrap" in stack:
            continue
        leaf = stack.split(";")[-1]
        own[leaf] += int(count)
        total += int(count)
    return [(name, round(100 * n / total, 1)) for name, n in own.most_common(top)] if total else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-ref", default="main", help="git ref of the 'before' tree")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--profile", action="store_true", help="py-spy the SDK runs too")
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    n, size = str(options.records), str(options.size)
    rows: list[dict[str, Any]] = []
    profiles: dict[str, list[tuple[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="raftka-sdk-compare-") as scratch:
        (Path(scratch) / "before").mkdir()
        trees = {
            "before": export_tree(options.before_ref, Path(scratch) / "before"),
            "after": ROOT,
        }
        local = LocalCluster(Path(scratch) / "cluster")
        layout = local.create_or_load(3, free_base_port(), {})
        for node in layout.all_nodes():
            local.start_node(layout, node.broker_id, detach=True)
        try:
            wait_for_brokers(layout.bootstrap, 3)
            time.sleep(1.0)  # their heartbeats unfence them just after registering
            pids = broker_pids(local, layout)
            common = ["--bootstrap", layout.bootstrap]

            def produce(topic: str, mode: str) -> list[str]:
                return ["produce", *common, "--topic", topic, "--records", n, "--size", size,
                        "--acks", "all", "--partitions", "3", "--replication-factor", "3",
                        "--mode", mode]

            def consume(topic: str, mode: str) -> list[str]:
                return ["consume", *common, "--topic", topic, "--records", n, "--mode", mode]

            rows.append(measure("after", ROOT, produce("pre-built", "batches"), pids))
            for label, tree in trees.items():
                rows.append(measure(label, tree, produce(f"{label}-sdk", "sdk"), pids))
            rows.append(measure("after", ROOT, produce("after-sdk-many", "sdk-many"), pids))
            for label, tree in trees.items():
                rows.append(measure(label, tree, consume("pre-built", "sdk"), pids))
            rows.append(measure("after", ROOT, consume("pre-built", "raw"), pids))
            if options.profile:
                for label, tree in trees.items():
                    for what, args in (
                        ("produce", produce(f"{label}-profile", "sdk")),
                        ("consume", consume("pre-built", "sdk")),
                    ):
                        out = Path(scratch) / f"{label}-{what}.txt"
                        run_client(tree, args, profile_to=out)
                        profiles[f"{label} {what}"] = summarize_profile(out)
        finally:
            local.stop_all(layout)
    if options.json:
        print(json.dumps({"rows": rows, "profiles": profiles}))
        return 0
    print(f"{'tree':<6} {'bench':<8} {'mode':<9} {'records/s':>11} {'client CPU-s/M':>15}"
          f"  broker CPU-s/M (by id)")
    for row in rows:
        print(f"{row['tree']:<6} {row['benchmark']:<8} {row['mode']:<9} "
              f"{row['records_per_s']:>11,} {row['client_cpu_s_per_m']:>15}  "
              f"{row['broker_cpu_s_per_m']}")
    for name, top in profiles.items():
        print(f"\npy-spy, {name}: own time")
        for function, share in top:
            print(f"  {share:5.1f}%  {function}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
