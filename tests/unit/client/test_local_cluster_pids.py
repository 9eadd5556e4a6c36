"""pid_of must not take a broker that is still in exec (empty /proc cmdline) for one that
exited: `raftka cluster up/start` said "exited during start-up" about live brokers (7 of 30
starts under load)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from raftka.client import local_cluster
from raftka.client.local_cluster import LocalCluster


def test_an_empty_cmdline_for_a_moment_is_a_starting_broker(tmp_path, monkeypatch):
    local = LocalCluster(tmp_path)
    node_dir = str(local.node_dir(1))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", node_dir])
    try:
        local.pid_path(1).write_text(f"{child.pid}\n")
        real = Path.read_bytes
        reads = {"cmdline": 0}

        def read_bytes(path: Path) -> bytes:
            if path.name == "cmdline":
                reads["cmdline"] += 1
                if reads["cmdline"] <= 3:
                    return b""  # still in exec
            return real(path)

        monkeypatch.setattr(local_cluster.Path, "read_bytes", read_bytes)
        assert local.pid_of(1) == child.pid
        assert reads["cmdline"] == 4
    finally:
        child.kill()
        child.wait()
    assert local.pid_of(1) is None  # gone (or a zombie) for real


@pytest.mark.parametrize("content", ["", "not a pid\n"])
def test_a_missing_or_bad_pid_file_means_not_running(tmp_path, content):
    local = LocalCluster(tmp_path)
    if content:
        local.pid_path(1).write_text(content)
    assert local.pid_of(1) is None
