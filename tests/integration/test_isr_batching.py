"""ISR changes of many partitions go to the controller in batches (Kafka's
AlterPartitionManager), on real brokers: when a follower of a few hundred partitions stops
answering, its leaders shrink every ISR it is in with a handful of AlterPartition requests
and metadata commits, not one per partition, and let it back in the same way."""

from __future__ import annotations

import signal

import pytest

from raftka import Admin
from raftka.proto.raftka.v1 import broker_pb2, broker_pb2_grpc
from tests.harness import LocalCluster, wait_for
from tests.integration.test_metrics import scrape, value

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PARTITIONS = 300
SETTINGS = {
    "default.replication.factor": "3",
    # Leaders notice a silent follower within a second; the controller would fence it only
    # after 30 s without heartbeats, so the shrinks are the leaders' own AlterPartitions.
    "replica.lag.time.max.ms": "1000",
    "broker.session.timeout.ms": "30000",
    "auto.leader.rebalance.enable": "false",
}


def counts(cluster: LocalCluster, paused: int | None = None) -> dict[str, float]:
    """The controllers' AlterPartition counters summed over the running brokers (but a
    `paused` one, which cannot answer and is no controller): a resumed voter may call an
    election (pysyncobj has no pre-vote), and the controller move with it."""
    total = dict.fromkeys(("requests", "partitions", "batches", "changes"), 0.0)
    for broker_id, broker in cluster.brokers.items():
        if broker.running and broker_id != paused:
            samples = scrape(broker.metrics_port)
            for kind in total:
                total[kind] += value(samples, f"raftka_controller_alter_partition_{kind}_total")
    return total


def isrs(cluster: LocalCluster, via: int) -> list[tuple[int, set[int]]]:
    """(leader, ISR) of every partition, as broker `via` (the controller) has them: its
    Metadata answer alone (the Admin's describe asks every leader, a paused one too)."""
    with cluster.brokers[via].channel() as channel:
        reply = broker_pb2_grpc.BrokerServiceStub(channel).Metadata(
            broker_pb2.MetadataRequest(topics=["wide"]), timeout=10)
    partitions = sorted(reply.topics[0].partitions, key=lambda p: p.partition)
    return [(p.leader_id, set(p.isr)) for p in partitions]


def since(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {kind: after[kind] - before[kind] for kind in after}


def test_a_silent_follower_leaves_and_rejoins_hundreds_of_isrs_in_a_few_commits(
        cluster_factory):
    cluster = cluster_factory(3, SETTINGS)
    cluster.start()
    cluster.wait_ready()
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("wide", num_partitions=PARTITIONS, replication_factor=3)
    controller = cluster.describe().controller_id
    victim = next(i for i in cluster.brokers if i != controller)
    wait_for(lambda: all(len(isr) == 3 for _, isr in isrs(cluster, controller)), 60,
             "every ISR full after the create")
    followed = [i for i, (leader, _) in enumerate(isrs(cluster, controller)) if leader != victim]
    assert len(followed) > PARTITIONS // 2
    before = counts(cluster)

    cluster.brokers[victim].signal(signal.SIGSTOP)  # alive, but silent
    try:
        wait_for(lambda: all(victim not in isrs(cluster, controller)[i][1] for i in followed),
                 60, f"broker {victim} out of the ISR of every partition it follows")
        shrunk = since(counts(cluster, paused=victim), before)
        # Counted from before it resumes: its leaders may let it back in at once.
        before = counts(cluster, paused=victim)
    finally:
        cluster.brokers[victim].signal(signal.SIGCONT)
    assert shrunk["changes"] >= len(followed), shrunk
    # Two leaders, each a few rounds at most: far fewer requests and commits than changes.
    assert shrunk["batches"] <= shrunk["changes"] / 10, shrunk
    assert shrunk["requests"] <= shrunk["partitions"] / 10, shrunk

    wait_for(lambda: all(len(isr) == 3 for _, isr in isrs(cluster, controller)), 60,
             f"broker {victim} back in every ISR")
    expanded = since(counts(cluster), before)
    assert expanded["changes"] >= len(followed), expanded
    assert expanded["batches"] <= expanded["changes"] / 10, expanded

    # Killed, it is fenced and taken out of every ISR by the controller (one batch); once
    # restarted and caught up, its leaders let it back in, again in batches.
    cluster.brokers[victim].kill()
    wait_for(lambda: all(victim not in isr for _, isr in isrs(cluster, controller)), 60,
             f"killed broker {victim} out of every ISR")
    before = counts(cluster)
    cluster.brokers[victim].start()
    wait_for(lambda: all(len(isr) == 3 for _, isr in isrs(cluster, controller)), 90,
             f"restarted broker {victim} back in every ISR")
    rejoined = since(counts(cluster), before)
    assert rejoined["changes"] >= PARTITIONS, rejoined
    assert rejoined["batches"] <= rejoined["changes"] / 10, rejoined
