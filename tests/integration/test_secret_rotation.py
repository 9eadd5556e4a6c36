"""Rotating the cluster secret with rolling restarts, as README describes: accept the new
secret everywhere, then sign with it everywhere, then drop the old one. The cluster keeps a
controller and takes acks=all writes after every single restart, and loses none."""

from __future__ import annotations

import pytest

from raftka import Admin, Producer
from tests.harness import LocalCluster, wait_for, write_secret_file
from tests.integration.test_replication import SETTINGS, read_partition

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROTATION = "cluster.secret.rotation.file"


def restart(cluster: LocalCluster, broker_id: int, secret, rotation) -> None:
    broker = cluster.brokers[broker_id]
    assert broker.stop() == 0
    broker.secret_file = secret
    broker.settings = {k: v for k, v in broker.settings.items() if k != ROTATION}
    if rotation is not None:
        broker.settings[ROTATION] = str(rotation)
    broker.start()
    cluster.wait_ready(timeout_s=60)


def test_a_secret_rotates_with_three_rolling_restarts(cluster_factory, tmp_path):
    cluster = cluster_factory(3, SETTINGS)
    cluster.start()
    cluster.wait_ready()
    old = cluster.secret_file
    new = write_secret_file(tmp_path / "next.secret")
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("rotating", num_partitions=1)
    sent: list[int] = []

    def write_some() -> None:
        with Producer(cluster.bootstrap, acks="all", delivery_timeout_ms=60_000) as producer:
            futures = [
                producer.send("rotating", str(len(sent) + i).encode(), partition=0)
                for i in range(20)
            ]
            for future in futures:
                future.get(60)
        sent.extend(range(len(sent), len(sent) + 20))

    write_some()
    phases = [(old, new), (new, old), (new, None)]  # (signs with, also accepts)
    for secret, rotation in phases:
        for broker_id in (1, 2, 3):
            restart(cluster, broker_id, secret, rotation)
            write_some()
    assert read_partition(cluster.bootstrap, "rotating") == sent
    # The old secret no longer gets anyone in: broker 3 restarted with it stays fenced.
    broker = cluster.brokers[3]
    assert broker.stop() == 0
    before = {b.endpoint.broker_id: b.incarnation_id for b in cluster.describe().brokers}
    broker.secret_file = old
    broker.settings.pop(ROTATION, None)
    seen = {i: len(b.log_text()) for i, b in cluster.brokers.items()}
    broker.start()

    def refused() -> bool:
        new_lines = cluster.brokers[1].log_text()[seen[1]:]
        return "rejected a Raft frame" in new_lines and (
            "found no controller" in broker.log_text()[seen[3]:]
        )

    wait_for(refused, 30, "broker 3 to be refused")
    assert not broker.serving()
    # Never registered, it acts on none of its saved metadata: it leads nothing and does not
    # even try to follow (a broker catches up to its own registration before it does).
    own = broker.log_text()[seen[3]:]
    assert "leader at epoch" not in own and "replica fetch" not in own
    described = {b.endpoint.broker_id: b for b in cluster.describe(via=1).brokers}
    assert described[3].incarnation_id == before[3]  # it never registered
    restart(cluster, 3, new, None)
    write_some()
    assert read_partition(cluster.bootstrap, "rotating") == sent
