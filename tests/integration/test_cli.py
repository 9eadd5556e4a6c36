"""The `raftka` command as a user runs it: cluster up, topics, produce, consume, status,
kill/start, watch, exit codes and one-line errors."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import free_port_block, wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def raftka(
    *args: str, stdin: str | None = None, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftka", *args],
        input=stdin,
        text=True,
        capture_output=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def running_cluster(tmp_path):
    """`raftka cluster up` in the background; stopped with SIGTERM (then by PID) at the end."""
    base = free_port_block(30)
    data_dir = tmp_path / "data"
    output = open(tmp_path / "up.out", "w+")  # noqa: SIM115
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "raftka",
            "cluster",
            "up",
            "--nodes",
            "3",
            "--data-dir",
            str(data_dir),
            "--base-port",
            str(base),
        ],
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    try:
        wait_for(
            lambda: "ready in" in (tmp_path / "up.out").read_text() or up.poll() is not None,
            60,
            "cluster up to report ready",
        )
        assert up.poll() is None, (tmp_path / "up.out").read_text()
        yield {
            "data_dir": str(data_dir),
            "bootstrap": f"127.0.0.1:{base}",
            "up": up,
            "output": tmp_path / "up.out",
        }
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(40)
            except subprocess.TimeoutExpired:
                up.kill()
        for pid_file in data_dir.glob("node-*.pid"):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
        output.close()


def test_topics_produce_consume_and_status_through_the_cli(running_cluster):
    bootstrap = ["--bootstrap", running_cluster["bootstrap"]]
    created = raftka(
        "topics",
        "create",
        "events",
        "--partitions",
        "3",
        "--config",
        "retention.ms=3600000",
        *bootstrap,
    )
    assert created.returncode == 0, created.stderr
    assert "replication factor 3" in created.stdout
    assert raftka("topics", "create", "events", *bootstrap).returncode == 1
    assert raftka("topics", "create", "events", "--if-not-exists", *bootstrap).returncode == 0
    listed = json.loads(raftka("topics", "list", "--json", *bootstrap).stdout)
    assert [t["name"] for t in listed] == ["events"]
    described = json.loads(raftka("topics", "describe", "events", "--json", *bootstrap).stdout)
    assert described["configs_set"] == {"retention.ms": "3600000"}
    assert all(len(p["isr"]) == 3 for p in described["partitions"])

    lines = "".join(f"user{i % 4}:event-{i}\n" for i in range(30))
    produced = raftka(
        "produce", "events", "--key-separator", ":", "--acks", "all", *bootstrap, stdin=lines
    )
    assert produced.returncode == 0, produced.stderr
    assert "Produced 30 records" in produced.stderr
    consumed = raftka(
        "consume", "events", "--from-beginning", "--max-messages", "30", "--json", *bootstrap
    )
    assert consumed.returncode == 0, consumed.stderr
    records = [json.loads(line) for line in consumed.stdout.splitlines()]
    assert sorted(r["value"] for r in records) == sorted(f"event-{i}" for i in range(30))
    for key in {r["key"] for r in records}:
        mine = [r for r in records if r["key"] == key]
        assert len({r["partition"] for r in mine}) == 1
        assert [r["value"] for r in mine] == sorted(
            (r["value"] for r in mine), key=lambda v: int(v.split("-")[1])
        )

    status = json.loads(
        raftka("cluster", "status", "--json", "--data-dir", running_cluster["data_dir"]).stdout
    )
    assert status["controller"] in (1, 2, 3)
    assert [b["id"] for b in status["brokers"]] == [1, 2, 3]
    assert all(b["pid"] and not b["fenced"] for b in status["brokers"])
    (topic,) = status["topics"]
    assert {p["partition"] for p in topic["partitions"]} == {0, 1, 2}

    env_run = raftka("topics", "list", env={"RAFTKA_BOOTSTRAP": running_cluster["bootstrap"]})
    assert env_run.stdout.split() == ["events"]
    assert raftka("topics", "delete", "events", *bootstrap).returncode == 0
    assert raftka("topics", "list", *bootstrap).stdout.strip() == ""


def test_kill_and_start_a_broker_then_watch_and_stop(running_cluster):
    data_dir = ["--data-dir", running_cluster["data_dir"]]
    status = json.loads(raftka("cluster", "status", "--json", *data_dir).stdout)
    controller = status["controller"]
    killed = raftka("cluster", "kill", str(controller), *data_dir)
    assert killed.returncode == 0 and "SIGKILL" in killed.stdout

    def new_controller_and_fenced() -> bool:
        now = json.loads(raftka("cluster", "status", "--json", *data_dir).stdout)
        fenced = {b["id"]: b["fenced"] for b in now["brokers"]}
        return now["controller"] not in (-1, controller) and fenced[controller]

    wait_for(new_controller_and_fenced, 30, "a new controller and the old one fenced")
    view = raftka("watch", "--once", *data_dir)
    assert view.returncode == 0 and "FENCED" in view.stdout
    started = raftka("cluster", "start", str(controller), *data_dir)
    assert started.returncode == 0 and "is alive" in started.stdout, started.stderr
    wait_for(
        lambda: "started (pid" in running_cluster["output"].read_text(),
        10,
        "cluster up to notice the restart",
    )
    pids = [int(p.read_text()) for p in Path(running_cluster["data_dir"]).glob("node-*.pid")]
    running_cluster["up"].send_signal(signal.SIGTERM)
    assert running_cluster["up"].wait(40) == 0
    assert "Stopped brokers [1, 2, 3]" in running_cluster["output"].read_text()
    time.sleep(0.5)
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists()
            or Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
        )


def test_failures_exit_nonzero_with_one_line(running_cluster, tmp_path):
    bootstrap = ["--bootstrap", running_cluster["bootstrap"]]
    cases = [
        (raftka("topics", "create", "bad/name", *bootstrap), "illegal characters"),
        (
            raftka("topics", "create", "x", "--config", "retention.ms=soon", *bootstrap),
            "retention.ms",
        ),
        (raftka("topics", "describe", "missing", *bootstrap), "does not exist"),
        (raftka("consume", "missing", "--timeout-ms", "100", *bootstrap), "does not exist"),
        (raftka("topics", "list", "--bootstrap", "127.0.0.1:1", "--request-timeout-ms", "1000"),
         "no broker answered"),
        (raftka("cluster", "kill", "9", "--data-dir", running_cluster["data_dir"]), "brokers 1..3"),
        (
            raftka("cluster", "status", "--data-dir", str(tmp_path / "nothing")),
            "no broker answered",
        ),
    ]
    for result, fragment in cases:
        assert result.returncode == 1, (result.args, result.stdout, result.stderr)
        error_lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert error_lines[-1].startswith("raftka: error:"), result.stderr
        assert fragment in error_lines[-1]
    zero = raftka("topics", "list", "--request-timeout-ms", "0", *bootstrap)
    assert zero.returncode == 2 and "--request-timeout-ms: 0 ms: must be above 0" in zero.stderr
    usage = raftka("produce")
    assert usage.returncode == 2
