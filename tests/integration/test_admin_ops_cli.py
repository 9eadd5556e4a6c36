"""The admin operations through the SDK (gRPC) and the `raftka` CLI on a real 3-broker
cluster: alter-config, add-partitions, delete-records, groups delete-offsets and delete,
log-dirs; refusals exit 1 with one line naming the problem and change nothing; a restarted
broker keeps every change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raftka import Admin, Consumer, Producer
from raftka.client.consumer import TopicPartition
from raftka.client.errors import RaftkaError
from tests.harness import LocalCluster, wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SETTINGS = {"default.replication.factor": "3", "offsets.topic.num.partitions": "3"}


@pytest.fixture
def cluster(cluster_factory) -> LocalCluster:
    cluster = cluster_factory(3, SETTINGS)
    cluster.start()
    cluster.wait_ready()
    return cluster


def raftka(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftka", *args, "--bootstrap", cluster.bootstrap],
        text=True, capture_output=True, timeout=60, cwd=REPO, env=dict(os.environ))


def ok_json(cluster: LocalCluster, *args: str) -> object:
    done = raftka(cluster, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def refused(cluster: LocalCluster, *args: str) -> str:
    done = raftka(cluster, *args)
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_topic_operations_with_the_cli_and_a_broker_restart(cluster):
    done = raftka(cluster, "topics", "create", "cli-ops", "--partitions", "1")
    assert done.returncode == 0, done.stderr

    # alter-config: set and delete; a bad key/value is refused naming it, changing nothing
    data = ok_json(cluster, "topics", "alter-config", "cli-ops", "--set", "retention.ms=5000",
                   "--set", "segment.bytes=65536")
    assert data["configs_set"] == {"retention.ms": "5000", "segment.bytes": "65536"}
    data = ok_json(cluster, "topics", "alter-config", "cli-ops", "--delete", "segment.bytes")
    assert data["configs_set"] == {"retention.ms": "5000"}
    line = refused(cluster, "topics", "alter-config", "cli-ops", "--set", "retention.ms=later")
    assert "INVALID_CONFIG" in line and "retention.ms" in line
    line = refused(cluster, "topics", "alter-config", "cli-ops", "--set", "bogus.key=1")
    assert "INVALID_CONFIG" in line and "bogus.key" in line
    with Admin(cluster.bootstrap) as admin:
        explicit = {c.name: c.value for c in admin.describe_topic("cli-ops").configs
                    if not c.is_default}
    assert explicit == {"retention.ms": "5000"}

    # add-partitions: grow, and never shrink
    assert ok_json(cluster, "topics", "add-partitions", "cli-ops", "--partitions", "3") == {
        "topic": "cli-ops", "partitions": 3}
    line = refused(cluster, "topics", "add-partitions", "cli-ops", "--partitions", "2")
    assert "INVALID_PARTITIONS" in line and "can only be added" in line

    # delete-records on the leader; beyond the high watermark is OFFSET_OUT_OF_RANGE
    with Producer(cluster.bootstrap, acks="all") as producer:
        for i in range(10):
            producer.send("cli-ops", str(i).encode(), partition=2)
        producer.flush()
    assert ok_json(cluster, "topics", "delete-records", "cli-ops", "--partition", "2",
                   "--before", "4")["log_start_offset"] == 4
    line = refused(cluster, "topics", "delete-records", "cli-ops", "--partition", "2",
                   "--before", "11")
    assert "OFFSET_OUT_OF_RANGE" in line
    consumer = Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest")
    consumer.assign([TopicPartition("cli-ops", 2)])
    consumer.seek(TopicPartition("cli-ops", 2), 1)  # below the start: reset to earliest
    first = None
    deadline = time.monotonic() + 20
    while first is None and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            first = records[0].offset
    consumer.close()
    assert first == 4

    # log-dirs: all three brokers host the new partitions; followers follow the start
    def starts() -> dict[int, int]:
        dirs = ok_json(cluster, "log-dirs", "--topic", "cli-ops")
        assert isinstance(dirs, list)
        return {d["broker"]: p["log_start_offset"] for d in dirs for p in d["partitions"]
                if p["partition"] == 2}

    wait_for(lambda: starts() == {1: 4, 2: 4, 3: 4}, 15, "every replica to start at 4")
    text = raftka(cluster, "log-dirs")
    assert text.returncode == 0 and "cli-ops-2" in text.stdout

    # a restarted broker keeps the configs, the partitions and the log start
    with Admin(cluster.bootstrap) as admin:
        leader = admin.describe_topic("cli-ops").partitions[2].leader_id
    cluster.brokers[leader].stop()
    cluster.brokers[leader].start()
    cluster.wait_ready(timeout_s=60)
    wait_for(lambda: starts().get(leader) == 4, 20, "the restarted broker to keep start 4")
    with Admin(cluster.bootstrap) as admin:
        description = admin.describe_topic("cli-ops")
    assert len(description.partitions) == 3
    assert {c.name: c.value for c in description.configs}["retention.ms"] == "5000"


def test_group_offsets_and_deletion_with_the_sdk_and_cli(cluster):
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("ga", num_partitions=1)
        admin.create_topic("gb", num_partitions=1)
    with Producer(cluster.bootstrap, acks="all") as producer:
        for topic in ("ga", "gb"):
            for i in range(5):
                producer.send(topic, str(i).encode())
        producer.flush()
    consumer = Consumer("ga", "gb", bootstrap_servers=cluster.bootstrap, group_id="cg",
                        auto_offset_reset="earliest", enable_auto_commit=False)
    seen = 0
    deadline = time.monotonic() + 30
    while seen < 10 and time.monotonic() < deadline:
        seen += sum(len(r) for r in consumer.poll(timeout_ms=500).values())
    consumer.commit()

    # while a member consumes both topics: subscribed, offsets stay; deleting the group fails
    done = raftka(cluster, "groups", "delete-offsets", "cg", "--topic", "ga", "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["topics"][0]["error"] == "GROUP_SUBSCRIBED_TO_TOPIC"
    line = refused(cluster, "groups", "delete", "cg")
    assert "NON_EMPTY_GROUP" in line
    consumer.close()

    def offsets() -> set[str]:
        with Admin(cluster.bootstrap) as admin:
            return {o.topic for o in admin.groups.describe_group("cg").offsets}

    wait_for(lambda: offsets() == {"ga", "gb"}, 10, "both topics' offsets")
    data = ok_json(cluster, "groups", "delete-offsets", "cg", "--topic", "ga")
    assert data["topics"] == [{"topic": "ga", "error": None, "message": None,
                               "partitions_deleted": 1}]
    assert offsets() == {"gb"}

    # the deletion is durable: the coordinator's replacement replays it
    with Admin(cluster.bootstrap) as admin:
        coordinator = admin.groups.describe_group("cg").coordinator_id
    cluster.brokers[coordinator].stop()
    cluster.brokers[coordinator].start()
    cluster.wait_ready(timeout_s=60)
    wait_for(lambda: offsets() == {"gb"}, 30, "the deleted offsets to stay deleted")

    done = raftka(cluster, "groups", "delete", "cg")
    assert done.returncode == 0, done.stderr
    with Admin(cluster.bootstrap) as admin, pytest.raises(RaftkaError, match="GROUP_ID_NOT_FOUND"):
        admin.groups.describe_group("cg")


def test_changes_sent_to_a_non_controller_are_forwarded_and_forgeries_refused(cluster):
    import grpc

    from raftka.broker.controller_client import FORWARDED_HEADER
    from raftka.proto.raftka.v1 import admin_pb2, admin_pb2_grpc

    controller = cluster.describe().controller_id
    other = next(b for b in cluster.brokers.values() if b.broker_id != controller)
    with Admin(other.address) as admin:
        admin.create_topic("fwd", num_partitions=1, replication_factor=3)
        admin.alter_configs("fwd", {"retention.ms": "60000"})
        admin.create_partitions("fwd", 2)
        # the answering broker waited until it applied the change itself
        description = admin.describe_topics(["fwd"])[0]
    assert len(description.partitions) == 2
    assert {c.name: c.value for c in description.configs}["retention.ms"] == "60000"
    # a call claiming to be forwarded by a broker, without the cluster's credentials
    with grpc.insecure_channel(cluster.brokers[controller].address) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.AlterConfigs(admin_pb2.AlterConfigsRequest(topics=[
                admin_pb2.TopicConfigAlteration(topic="fwd", set={"retention.ms": "1"})]),
                metadata=((FORWARDED_HEADER, "2"),), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with Admin(cluster.bootstrap) as admin:
        configs = {c.name: c.value for c in admin.describe_topic("fwd").configs}
    assert configs["retention.ms"] == "60000"
