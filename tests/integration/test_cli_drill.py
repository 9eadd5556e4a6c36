"""The README's failover drill as a person runs it, without --bootstrap: `raftka cluster up`
in a directory, then every command from another terminal in that directory, before and after
`raftka cluster kill 1`; `cluster start` after a kill; `cluster up` supervising brokers that
were restarted elsewhere; and no broker process left behind by an up/stop cycle, even by a
`cluster up` that failed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from raftka.proto.raftka.v1 import admin_pb2, admin_pb2_grpc
from tests.harness import free_port_block, wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def environment() -> dict[str, str]:
    """The user's environment, minus any bootstrap setting; this tree's code (the commands
    run outside the repository, where `import raftka` would find the installed one)."""
    env = {k: v for k, v in os.environ.items() if k != "RAFTKA_BOOTSTRAP"}
    env["PYTHONPATH"] = str(REPO)
    return env


def run(cwd: Path, *args: str, stdin: str | None = None,
        timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "raftka", *args], input=stdin, text=True,
                          capture_output=True, timeout=timeout, cwd=cwd, env=environment())


def broker_processes(data_dir: Path) -> list[int]:
    """Live processes whose command line names `data_dir` (brokers of that cluster)."""
    found = []
    needle = str(data_dir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
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
    """`raftka cluster up` running in the background in `cwd`, output in up.out."""

    def __init__(self, cwd: Path, base_port: int, *extra: str) -> None:
        self.cwd = cwd
        self.data_dir = cwd / "raftka-data"
        self.out_path = cwd / "up.out"
        self._out = open(self.out_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "raftka", "cluster", "up", "--nodes", "3",
             "--base-port", str(base_port), *extra],
            stdout=self._out, stderr=subprocess.STDOUT, cwd=cwd, env=environment())

    def output(self) -> str:
        return self.out_path.read_text()

    def wait_ready(self) -> None:
        wait_for(lambda: "ready in" in self.output() or self.process.poll() is not None,
                 90, "cluster up to report ready")
        assert self.process.poll() is None, self.output()

    def stop(self) -> int | None:
        """Ctrl-C's twin (SIGTERM); the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._out.close()
        return self.process.returncode

    def kill_leftovers(self) -> None:
        for pid in broker_processes(self.data_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def up(tmp_path) -> Iterator[Up]:
    cluster = Up(tmp_path, free_port_block(30))
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()
        cluster.kill_leftovers()


def test_after_kill_1_every_readme_command_works_without_bootstrap(up):
    here = up.cwd
    output = up.output()
    assert "gRPC bootstrap:  127.0.0.1:" in output and "Kafka bootstrap: 127.0.0.1:" in output
    assert run(here, "topics", "create", "drill", "--partitions", "3").returncode == 0
    lines = "".join(f"{i}\n" for i in range(1, 201))
    assert run(here, "produce", "drill", "--acks", "all", stdin=lines).returncode == 0

    killed = run(here, "cluster", "kill", "1")
    assert killed.returncode == 0, killed.stderr

    commands = [
        ("topics", "list"),
        ("topics", "describe", "drill"),
        ("topics", "create", "orders", "--partitions", "3", "--replication-factor", "2"),
        ("consume", "drill", "--from-beginning", "--max-messages", "200"),
        ("cluster", "status"),
        ("cluster", "status", "--json"),
        ("watch", "--once"),
        ("groups", "list"),
    ]
    results = {args: run(here, *args) for args in commands}
    for args, result in results.items():
        assert result.returncode == 0, (args, result.stderr)
    # The default replication factor (3) is refused while a broker of three is down, as
    # Kafka does, naming the fix; the topic would otherwise have 2 replicas for ever.
    refused = run(here, "topics", "create", "payments", "--partitions", "3")
    assert refused.returncode != 0
    assert "INVALID_REPLICATION_FACTOR" in refused.stderr
    assert "start the missing broker" in refused.stderr
    produced = run(here, "produce", "drill", "--acks", "all",
                   stdin="".join(f"{i}\n" for i in range(201, 401)))
    assert produced.returncode == 0, produced.stderr
    consumed = run(here, "consume", "drill", "--from-beginning", "--timeout-ms", "3000")
    values = consumed.stdout.split()
    assert sorted(map(int, values)) == list(range(1, 401))  # none lost, none twice

    status = json.loads(results[("cluster", "status", "--json")].stdout)
    broker_1 = next(b for b in status["brokers"] if b["id"] == 1)
    assert broker_1["pid"] is None
    assert all(b["kafka_address"] for b in status["brokers"])
    assert status["bootstrap"]["kafka"]

    started = run(here, "cluster", "start", "1")
    assert started.returncode == 0 and "is alive" in started.stdout, started.stderr


def test_errors_name_each_unreachable_address_once(tmp_path):
    base = free_port_block(30)
    result = run(tmp_path, "topics", "list", "--bootstrap",
                 f"127.0.0.1:{base},127.0.0.1:{base + 10}", "--request-timeout-ms", "1500")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    # While it retries it says so, once, naming the limit that ends it.
    assert [line for line in lines if "retrying for up to 1.5 s" in line] == lines[:1], lines
    error = lines[-1]
    assert "no broker answered" in error and "connection refused" in error
    for port in (base, base + 10):
        assert len(re.findall(rf"127\.0\.0\.1:{port}(?!\d)", error)) == 1, error


def test_cluster_up_supervises_brokers_restarted_by_cluster_start_until_stopped(up):
    """Each broker killed once and started again by another command: `cluster up` carries
    on, reports each one, and its Ctrl-C still stops them all."""
    for broker_id in (1, 2, 3):
        assert run(up.cwd, "cluster", "kill", str(broker_id)).returncode == 0
        started = run(up.cwd, "cluster", "start", str(broker_id), "--bootstrap",
                      ",".join(f"127.0.0.1:{p}" for p in _grpc_ports(up)))
        assert started.returncode == 0, started.stdout + started.stderr
        assert "is alive" in started.stdout
        # The truth: the controller has the *new* process registered and unfenced (right
        # after the kill it still shows the old one unfenced, which `start` once took).
        new_pid = int(re.search(r"\(pid (\d+)\)", started.stdout).group(1))  # type: ignore[union-attr]
        assert registered(up, broker_id) == (new_pid, False)
    wait_for(lambda: up.output().count("started (pid") == 3, 10,
             "cluster up to notice the three restarts")
    assert up.process.poll() is None, up.output()
    assert "Stopping" not in up.output()
    assert up.stop() == 0
    assert "Stopped brokers [1, 2, 3]" in up.output()
    assert broker_processes(up.data_dir) == []


def registered(up: Up, broker_id: int) -> tuple[int, bool]:
    """(PID, fenced) broker `broker_id` is registered with, per the newest metadata any
    broker has (as `raftka cluster status` picks it)."""
    newest = None
    for port in _grpc_ports(up):
        with contextlib.suppress(grpc.RpcError), \
                grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = admin_pb2_grpc.AdminServiceStub(channel).DescribeCluster(
                admin_pb2.DescribeClusterRequest(), timeout=2)
            if newest is None or reply.metadata_offset > newest.metadata_offset:
                newest = reply
    assert newest is not None, "no broker answered DescribeCluster"
    status = next(b for b in newest.brokers if b.endpoint.broker_id == broker_id)
    return status.pid, status.fenced


def _grpc_ports(up: Up) -> list[int]:
    layout = json.loads((up.data_dir / "cluster.json").read_text())
    return [layout["base_port"] + 10 * i for i in range(layout["nodes"])]


def test_a_failed_cluster_up_stops_every_broker_it_started(tmp_path):
    base = free_port_block(30)
    with socket.socket() as squatter:  # broker 3's gRPC port is taken
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", base + 20))
        squatter.listen()
        failed = Up(tmp_path, base)
        try:
            code = failed.process.wait(120)
            assert code == 1, failed.output()
            assert "broker 3 exited during start-up (exit code" in failed.output()
            assert broker_processes(failed.data_dir) == []
        finally:
            failed.stop()
            failed.kill_leftovers()


def test_an_up_stop_cycle_leaves_no_process_behind(tmp_path):
    base = free_port_block(30)
    for _ in range(2):
        cluster = Up(tmp_path, base)
        try:
            cluster.wait_ready()
            assert cluster.stop() == 0
            assert broker_processes(cluster.data_dir) == []
        finally:
            cluster.stop()
            cluster.kill_leftovers()
