"""What `raftka cluster up` says when it stops: with every broker already gone (stopped or
killed by hand), it printed "Stopped brokers []"."""

from __future__ import annotations

import signal
import subprocess
import sys

from raftka.client import cli_cluster
from raftka.client.local_cluster import LocalCluster


def test_shutdown_with_no_broker_left_says_so(tmp_path, capsys, monkeypatch):
    local = LocalCluster(tmp_path)
    layout = local.create_or_load(3, 20_000, {})
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    monkeypatch.setattr(signal, "signal", lambda *_: None)  # keep the test runner's SIGINT
    cli_cluster._shutdown(local, layout, {1: exited})
    out = capsys.readouterr().out
    assert "Stopped brokers []" not in out
    assert f"No broker was still running. Data kept in {local.root}." in out
