"""The Node.js consumer-group member (examples/node/group-consumer.js) against a real broker,
checked with the Python SDK: it reads and commits, shares partitions with another member and
hands over to a Python consumer of the same group."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftka import Admin, Consumer, Producer
from tests.harness import LocalCluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.node]

NODE_DIR = Path(__file__).resolve().parents[2] / "examples" / "node"
NODE = shutil.which("node")
TIMEOUT_S = 30
SETTINGS = {
    "group.consumer.session.timeout.ms": "3000",
    "group.consumer.heartbeat.interval.ms": "300",
    "offsets.topic.num.partitions": "3",
}
TOPIC = "node-group"
RECORDS = 50

if NODE is None:
    pytestmark.append(pytest.mark.skip(reason="node is not on the PATH (Node.js 18+ is needed)"))
elif not (NODE_DIR / "node_modules").is_dir():
    pytestmark.append(
        pytest.mark.skip(
            reason=f"{NODE_DIR / 'node_modules'} is missing: run `npm install` in {NODE_DIR} "
            "(`make test` does it)"
        )
    )


@pytest.fixture
def cluster(cluster_factory) -> LocalCluster:
    cluster = cluster_factory(1, SETTINGS)
    cluster.start()
    cluster.wait_ready()
    Admin(cluster.bootstrap).create_topic(TOPIC, num_partitions=2)
    return cluster


@pytest.fixture
def node_members() -> Iterator[list[subprocess.Popen]]:
    """Node processes started by a test; any still running at the end are killed."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)


def start_member(
    members: list[subprocess.Popen], bootstrap: str, group: str, *args: str
) -> subprocess.Popen:
    assert NODE is not None
    process = subprocess.Popen(
        [
            NODE,
            "group-consumer.js",
            "--bootstrap",
            bootstrap,
            "--topic",
            TOPIC,
            "--group",
            group,
            "--from-beginning",
            *args,
        ],
        cwd=NODE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    members.append(process)
    return process


def finish(process: subprocess.Popen) -> list[dict]:
    """Wait for a member to exit 0; its JSON lines."""
    stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, stderr
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def produce(bootstrap: str, start: int, count: int) -> list[str]:
    producer = Producer(bootstrap)
    try:
        for i in range(start, start + count):
            producer.send(TOPIC, f"value-{i}".encode(), key=f"key-{i}".encode())
        producer.flush()
    finally:
        producer.close()
    return [f"value-{i}" for i in range(start, start + count)]


def describe(bootstrap: str, group: str):
    admin = Admin(bootstrap)
    try:
        return admin.groups.describe_group(group)
    finally:
        admin.close()


def check_records(lines: list[dict], values: list[str]) -> None:
    """Every record exactly once, its key matching its value, offsets unique per partition."""
    assert sorted(line["value"] for line in lines) == sorted(values)
    assert all(line["key"] == line["value"].replace("value-", "key-") for line in lines)
    positions = [(line["partition"], line["offset"]) for line in lines]
    assert len(set(positions)) == len(positions)
    assert {line["partition"] for line in lines} <= {0, 1}


def test_node_member_reads_commits_and_leaves(cluster, node_members):
    values = produce(cluster.bootstrap, 0, RECORDS)
    member = start_member(node_members, cluster.bootstrap, "g1", "--max-messages", str(RECORDS))
    lines = finish(member)
    check_records(lines, values)
    # In order within each partition.
    for partition in (0, 1):
        offsets = [line["offset"] for line in lines if line["partition"] == partition]
        assert offsets == sorted(offsets)

    description = describe(cluster.bootstrap, "g1")
    committed = {(o.topic, o.partition): o.offset for o in description.offsets}
    assert set(committed) == {(TOPIC, 0), (TOPIC, 1)}
    assert sum(committed.values()) == RECORDS
    for partition in (0, 1):  # the next offset after the last record read
        offsets = [line["offset"] for line in lines if line["partition"] == partition]
        assert committed[(TOPIC, partition)] == (max(offsets) + 1 if offsets else 0)
    assert list(description.members) == []  # it left the group on exit


def test_two_node_members_share_the_partitions(cluster, node_members):
    first = start_member(node_members, cluster.bootstrap, "g2", "--timeout-ms", "8000")
    second = start_member(node_members, cluster.bootstrap, "g2", "--timeout-ms", "8000")

    def split() -> bool:
        members = describe(cluster.bootstrap, "g2").members
        owned = sorted(
            sorted(p for t in m.assignment if t.topic == TOPIC for p in t.partitions)
            for m in members
        )
        return owned == [[0], [1]]

    wait_for(split, TIMEOUT_S, "the two members to take one partition each")
    values = produce(cluster.bootstrap, 0, RECORDS)
    outputs = [finish(first), finish(second)]

    check_records(outputs[0] + outputs[1], values)
    read_by = [{line["partition"] for line in lines} for lines in outputs]
    assert sorted(map(sorted, read_by)) == [[0], [1]]  # one partition each, never both
    description = describe(cluster.bootstrap, "g2")
    assert sum(o.offset for o in description.offsets) == RECORDS
    assert list(description.members) == []


def test_python_consumer_continues_from_the_node_members_commits(cluster, node_members):
    produce(cluster.bootstrap, 0, RECORDS)
    member = start_member(node_members, cluster.bootstrap, "g3", "--max-messages", str(RECORDS))
    assert len(finish(member)) == RECORDS

    consumer = Consumer(
        TOPIC, bootstrap_servers=cluster.bootstrap, group_id="g3", auto_offset_reset="earliest"
    )
    try:
        seen: list[str] = []

        def poll() -> None:
            for batch in consumer.poll(timeout_ms=200).values():
                seen.extend(record.value.decode() for record in batch)

        def assigned() -> bool:
            poll()
            return len(consumer.assignment()) == 2

        wait_for(assigned, TIMEOUT_S, "the Python consumer to get both partitions")
        quiet_until = time.monotonic() + 2
        while time.monotonic() < quiet_until:
            poll()
        assert seen == []  # everything before was committed by the Node member

        values = produce(cluster.bootstrap, RECORDS, 5)
        deadline = time.monotonic() + TIMEOUT_S
        while len(seen) < len(values) and time.monotonic() < deadline:
            poll()
        settle_until = time.monotonic() + 1
        while time.monotonic() < settle_until:
            poll()
        assert sorted(seen) == sorted(values)
    finally:
        consumer.close()
