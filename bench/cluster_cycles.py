"""The local-cluster commands under churn, as issue 13's drill asks, counted over N cycles:

    python bench/cluster_cycles.py [--cycles 20] [--json] [--only up-stop|kill-start]

  up-stop     `raftka cluster up` on one data directory started the moment another cluster
              (another directory, other ports) was told to stop, N times, alternating: how
              many came up, how long each took to be ready, and how many broker processes
              were left behind once each stopped cluster's `cluster up` had exited.
  kill-start  under one `raftka cluster up`: `raftka cluster kill K` then at once
              `raftka cluster start K` (K = 1, 2, 3, 1, ...), N times: how many `cluster
              start` exited 0 (the broker is registered and unfenced), how long each took,
              and whether `cluster up` was still running and supervising at the end.

Each command runs as a user would run it (`python -m raftka ...` in the cluster's
directory), with this tree's code. Why: `cluster up` used to judge a just-forked broker by
/proc and call it dead, stop the others and leave it orphaned; this counts that.
"""

from __future__ import annotations

import argparse
import contextlib
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

from tests.harness import free_port_block  # noqa: E402

READY_TIMEOUT_S = 120
PORTS_PER_CLUSTER = 30


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAFTKA_BOOTSTRAP"}
    env["PYTHONPATH"] = str(ROOT)
    return env


def raftka(cwd: Path, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "raftka", *args], cwd=cwd, env=environment(),
                          text=True, capture_output=True, timeout=timeout_s)


def broker_processes(data_dir: Path) -> list[int]:
    needle = str(data_dir).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if needle in cmdline and b"broker" in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


class Up:
    def __init__(self, cwd: Path, base_port: int) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        self.cwd = cwd
        self.data_dir = cwd / "raftka-data"
        self.log = cwd / "up.out"
        self._out = open(self.log, "w")  # noqa: SIM115 - closed in wait_exit()
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "raftka", "cluster", "up", "--nodes", "3",
             "--base-port", str(base_port)],
            cwd=cwd, env=environment(), stdout=self._out, stderr=subprocess.STDOUT)

    def wait_ready(self) -> float | None:
        """Seconds until `ready`, or None if it exited or timed out first."""
        deadline = self.started + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if "ready in" in self.log.read_text():
                return time.monotonic() - self.started
            if self.process.poll() is not None:
                return None
            time.sleep(0.05)
        return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_exit(self) -> int:
        try:
            code = self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._out.close()
        return code

    def kill_leftovers(self) -> None:
        for pid in broker_processes(self.data_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def summary(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    return {"median": round(statistics.median(samples), 2), "max": round(max(samples), 2)}


def up_stop(root: Path, cycles: int) -> dict[str, object]:
    bases = [free_port_block(PORTS_PER_CLUSTER), 0]
    while True:
        bases[1] = free_port_block(PORTS_PER_CLUSTER)
        if abs(bases[1] - bases[0]) >= PORTS_PER_CLUSTER:
            break
    dirs = [root / "a", root / "b"]
    current = Up(dirs[0], bases[0])
    ready_s: list[float] = []
    failures: list[str] = []
    leftovers = 0
    if current.wait_ready() is None:
        raise RuntimeError(f"the first cluster did not come up: {current.log.read_text()}")
    try:
        for cycle in range(cycles):
            side = (cycle + 1) % 2
            current.stop()  # ... and while it shuts down, the next one starts
            following = Up(dirs[side], bases[side])
            took = following.wait_ready()
            if current.wait_exit() != 0:
                failures.append(f"cycle {cycle + 1}: the stopped cluster up exited non-zero")
            left = broker_processes(current.data_dir)
            leftovers += len(left)
            current.kill_leftovers()
            if took is None:
                failures.append(f"cycle {cycle + 1}: did not come up: "
                                f"{following.log.read_text()[-400:]}")
                following.stop()
                following.wait_exit()
                following.kill_leftovers()
                following = Up(dirs[side], bases[side])
                if following.wait_ready() is None:
                    raise RuntimeError("the cluster did not come up on a retry either")
            else:
                ready_s.append(took)
            outcome = f"ready in {took:.1f} s" if took else "FAILED"
            print(f"  up-stop cycle {cycle + 1}/{cycles}: {outcome}, "
                  f"{len(left)} process(es) left by the stopped one", file=sys.stderr, flush=True)
            current = following
    finally:
        current.stop()
        current.wait_exit()
        leftovers += len(broker_processes(current.data_dir))
        current.kill_leftovers()
    return {"cycles": cycles, "came_up": len(ready_s), "failures": failures,
            "processes_left_behind": leftovers, "ready_s": summary(ready_s)}


def kill_start(root: Path, cycles: int) -> dict[str, object]:
    up = Up(root / "k", free_port_block(PORTS_PER_CLUSTER))
    if up.wait_ready() is None:
        raise RuntimeError(f"cluster did not come up: {up.log.read_text()}")
    start_s: list[float] = []
    failures: list[str] = []
    try:
        for cycle in range(cycles):
            broker_id = str(cycle % 3 + 1)
            killed = raftka(up.cwd, "cluster", "kill", broker_id)
            began = time.monotonic()
            started = raftka(up.cwd, "cluster", "start", broker_id)
            took = time.monotonic() - began
            ok = killed.returncode == 0 and started.returncode == 0
            if ok:
                start_s.append(took)
            else:
                failures.append(f"cycle {cycle + 1}: kill rc {killed.returncode}, start rc "
                                f"{started.returncode}: {(started.stderr or '')[-300:]}")
            outcome = f"alive after {took:.1f} s" if ok else "FAILED"
            print(f"  kill-start cycle {cycle + 1}/{cycles} (broker {broker_id}): {outcome}",
                  file=sys.stderr, flush=True)
        supervising = up.process.poll() is None
        restarts_seen = up.log.read_text().count("started (pid")
    finally:
        up.stop()
        code = up.wait_exit()
        left = broker_processes(up.data_dir)
        up.kill_leftovers()
    return {"cycles": cycles, "succeeded": len(start_s), "failures": failures,
            "start_s": summary(start_s), "cluster_up_still_running": supervising,
            "restarts_cluster_up_reported": restarts_seen, "cluster_up_exit_code": code,
            "processes_left_behind": len(left)}


RUNS = {"up-stop": up_stop, "kill-start": kill_start}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--only", choices=sorted(RUNS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, object] = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="raftka-cycles-") as scratch:
        for name, run in RUNS.items():
            if args.only in (None, name):
                results[name] = run(Path(scratch), args.cycles)
    if args.json:
        print(json.dumps(results))
    else:
        for name, value in results.items():
            print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
