"""Local cluster layout: ports, voters, reuse of a data directory."""

from __future__ import annotations

import pytest

from raftka.client.local_cluster import LocalCluster, LocalClusterError


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
