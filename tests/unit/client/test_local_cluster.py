"""Local cluster layout: ports, voters, reuse of a data directory."""

from __future__ import annotations

import subprocess
import sys

import pytest

from raftka.client.cli_common import resolve_bootstrap
from raftka.client.local_cluster import LocalCluster, LocalClusterError
from raftka.client.transport import BOOTSTRAP_ENV, DEFAULT_BOOTSTRAP, bootstrap_list


def test_port_layout_and_voters(tmp_path):
    layout = LocalCluster(tmp_path).create_or_load(5, 9090, {})
    assert [n.grpc_port for n in layout.all_nodes()] == [9090, 9100, 9110, 9120, 9130]
    assert layout.node(1).kafka_port == 9092
    assert layout.voters_spec == "1@127.0.0.1:9091,2@127.0.0.1:9101,3@127.0.0.1:9111"
    assert layout.settings["min.insync.replicas"] == "2"


def test_same_data_dir_keeps_its_layout(tmp_path):
    LocalCluster(tmp_path).create_or_load(3, 20000, {"num.partitions": "3"})
    again = LocalCluster(tmp_path).create_or_load(None, None, {})
    assert (again.nodes, again.base_port, again.settings["num.partitions"]) == (3, 20000, "3")
    with pytest.raises(LocalClusterError, match="3-node cluster"):
        LocalCluster(tmp_path).create_or_load(5, None, {})


def test_single_node_cluster_is_not_asked_for_three_replicas(tmp_path):
    layout = LocalCluster(tmp_path).create_or_load(1, 9090, {})
    assert layout.settings["default.replication.factor"] == "1"
    assert layout.settings["min.insync.replicas"] == "1"


def test_unknown_broker_and_missing_cluster_are_clear_errors(tmp_path):
    with pytest.raises(LocalClusterError, match="run `raftka cluster up"):
        LocalCluster(tmp_path / "none").load_layout()
    layout = LocalCluster(tmp_path).create_or_load(3, 9090, {})
    with pytest.raises(LocalClusterError, match=r"brokers 1\.\.3"):
        layout.node(4)
    assert LocalCluster(tmp_path).pid_of(1) is None


def test_the_default_bootstrap_names_every_broker_of_the_default_local_cluster(
    tmp_path, monkeypatch
):
    """`raftka cluster kill 1` on `make cluster` used to break every command that used the
    default bootstrap: it named broker 1 alone."""
    monkeypatch.delenv(BOOTSTRAP_ENV, raising=False)
    layout = LocalCluster(tmp_path).create_or_load(None, None, {})
    assert layout.bootstrap == DEFAULT_BOOTSTRAP
    assert len(bootstrap_list(None)) == 3
    assert bootstrap_list("a:1,b:2,a:1") == ["a:1", "b:2"]  # each address once
    assert layout.kafka_bootstrap == "127.0.0.1:9092,127.0.0.1:9102,127.0.0.1:9112"


def test_commands_find_the_local_cluster_the_env_or_the_default(tmp_path, monkeypatch):
    monkeypatch.delenv(BOOTSTRAP_ENV, raising=False)
    data = tmp_path / "raftka-data"
    assert resolve_bootstrap(None, str(data)) == DEFAULT_BOOTSTRAP
    LocalCluster(data).create_or_load(5, 20000, {})
    found = resolve_bootstrap(None, str(data))
    assert found.split(",") == [f"127.0.0.1:{20000 + 10 * i}" for i in range(5)]
    monkeypatch.setenv(BOOTSTRAP_ENV, "h:1")
    assert resolve_bootstrap(None, str(data)) == "h:1"
    assert resolve_bootstrap("x:2", str(data)) == "x:2"
    (data / "cluster.json").write_text("{broken")
    monkeypatch.delenv(BOOTSTRAP_ENV)
    assert resolve_bootstrap(None, str(data)) == DEFAULT_BOOTSTRAP


def test_stop_all_stops_its_own_children_whatever_their_pid_files_say(tmp_path):
    """A failed `cluster up` left a broker running when /proc made it look gone: the
    process handles it holds decide."""
    local = LocalCluster(tmp_path)
    layout = local.create_or_load(2, 20000, {})
    children = {
        i: subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        for i in (1, 2)
    }
    try:
        assert local.pid_of(1) is None  # no pid file: invisible to /proc-based checks
        assert local.stop_all(layout, timeout_s=5, children=children) == [1, 2]
        assert all(child.poll() is not None for child in children.values())
    finally:
        for child in children.values():
            child.kill()
            child.wait()
