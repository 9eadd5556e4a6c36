"""`raftka console --metrics`: which metrics listeners the throughput chart reads."""

from __future__ import annotations

import argparse

import pytest

from raftka.client.cli_common import CliError
from raftka.client.cli_console import metrics_for
from raftka.client.local_cluster import LocalCluster
from raftka.client.transport import BOOTSTRAP_ENV


def args(tmp_path, bootstrap: str | None = None, metrics: str | None = None):
    return argparse.Namespace(bootstrap=bootstrap, metrics=metrics, data_dir=str(tmp_path))


def test_given_metrics_listeners_are_used_and_checked(tmp_path):
    assert metrics_for(args(tmp_path, metrics="a:9093, b:9103,")) == ["a:9093", "b:9103"]
    for bad in ("nohost", "a:port", ":9093", "a:0", "a:70000"):
        with pytest.raises(CliError, match="--metrics takes HOST:PORT"):
            metrics_for(args(tmp_path, metrics=bad))


def test_the_local_clusters_metrics_ports_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv(BOOTSTRAP_ENV, raising=False)
    assert metrics_for(args(tmp_path)) == []  # no local cluster there: no chart
    LocalCluster(tmp_path).create_or_load(3, 9090, {})
    assert metrics_for(args(tmp_path)) == ["127.0.0.1:9093", "127.0.0.1:9103", "127.0.0.1:9113"]
    # another cluster named: its metrics are not the local one's
    assert metrics_for(args(tmp_path, bootstrap="elsewhere:9090")) == []
