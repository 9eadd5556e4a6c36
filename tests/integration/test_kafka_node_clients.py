"""Unmodified Node.js Kafka clients (kafkajs, and NestJS's Kafka transport on top of it) against
the Kafka wire-protocol listeners of a real 3-broker cluster (examples/nestjs), checked with
the Python SDK."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from raftka import Admin, Consumer
from raftka.client.consumer import TopicPartition
from tests.harness import LocalCluster, ProcessExitedError, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.node]

NEST_DIR = Path(__file__).resolve().parents[2] / "examples" / "nestjs"
NODE = shutil.which("node")
SETTINGS = {
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.num.partitions": "3",
    "group.initial.rebalance.delay.ms": "300",
}
TIMEOUT_S = 45


def node_major(node: str) -> int:
    try:
        version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
        return int(version.strip().lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.SubprocessError):
        return 0


if NODE is None:
    pytestmark.append(pytest.mark.skip(reason="node is not on the PATH (Node.js 20+ is needed)"))
elif node_major(NODE) < 20:
    pytestmark.append(pytest.mark.skip(reason=f"{NODE} is older than Node.js 20 (NestJS needs it)"))
elif not (NEST_DIR / "node_modules").is_dir():
    pytestmark.append(
        pytest.mark.skip(
            reason=f"{NEST_DIR / 'node_modules'} is missing: run `npm install` in {NEST_DIR} "
            "(`make test` does it)"
        )
    )


@pytest.fixture
def cluster(cluster_factory) -> LocalCluster:
    cluster = cluster_factory(3, SETTINGS)
    cluster.start()
    cluster.wait_ready()
    return cluster


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def run_node(*args: str, timeout_s: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    assert NODE is not None
    return subprocess.run(
        [NODE, *args],
        cwd=NEST_DIR,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def json_lines(text: str) -> list[dict]:
    """The JSON objects among a script's output lines (Nest may log plain lines too)."""
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                out.append(value)
    return out


class NodeProcess:
    """A long-running node script; its stdout JSON lines are collected as they come."""

    def __init__(self, *args: str, stderr_path: Path) -> None:
        assert NODE is not None
        self.lines: list[dict] = []
        self.stdout_text: list[str] = []
        self.stderr_path = stderr_path
        self._stderr = open(stderr_path, "w")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [NODE, *args],
            cwd=NEST_DIR,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.stdout_text.append(line)
            self.lines.extend(json_lines(line))

    def wait_for_line(self, predicate, timeout_s: float, what: str) -> dict:
        def found() -> dict | None:
            for line in list(self.lines):
                if predicate(line):
                    return line
            if self.process.poll() is not None:
                raise ProcessExitedError(
                    f"{what}: the process exited ({self.process.returncode})\n{self.output()}"
                )
            return None

        try:
            result = wait_for(found, timeout_s, what)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.output()}") from exc
        assert isinstance(result, dict)
        return result

    def output(self) -> str:
        return (
            f"stdout:\n{''.join(self.stdout_text)[-4000:]}\n"
            f"stderr:\n{self.stderr_path.read_text(errors='replace')[-4000:]}"
        )

    def wait(self, timeout_s: float) -> int:
        code = self.process.wait(timeout_s)
        self._reader.join(5)
        return code

    def stop(self) -> None:
        """SIGTERM, then SIGKILL by PID if it lingers."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._reader.join(5)
        self._stderr.close()


def read_partition(bootstrap: str, topic: str, partition: int, timeout_s: float = 20) -> list:
    """Every record of one partition, from the log start to its end offset."""
    tp = TopicPartition(topic, partition)
    consumer = Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    try:
        end = consumer.end_offsets([tp])[tp]
        consumer.assign([tp])
        records: list = []
        deadline = time.monotonic() + timeout_s
        while (not records or records[-1].offset < end - 1) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def test_kafkajs_round_trip_through_a_consumer_group(cluster):
    topic, group = unique("kafkajs-roundtrip"), unique("kafkajs-group")
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic(topic, num_partitions=3)

    result = run_node(
        "kafkajs-roundtrip.js",
        "--brokers",
        cluster.kafka_bootstrap,
        "--topic",
        topic,
        "--group",
        group,
        "--count",
        "300",
        "--timeout-ms",
        "30000",
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    (summary,) = [line for line in json_lines(result.stdout) if "produced" in line]
    assert summary["produced"] == summary["consumed"] == 300
    assert summary["missing"] == []
    assert summary["produced_partitions"] == [0, 1, 2]  # keys spread over the 3 partitions
    committed = {int(p): offset for p, offset in summary["committed"].items()}
    assert sum(committed.values()) == 300

    # The Kafka client's commits are the group's offsets the gRPC side sees, and they are
    # the end of each partition.
    with Admin(cluster.bootstrap) as admin:
        description = admin.groups.describe_group(group)
    assert {o.partition: o.offset for o in description.offsets if o.topic == topic} == committed
    with Consumer(bootstrap_servers=cluster.bootstrap) as probe:
        ends = probe.end_offsets([TopicPartition(topic, p) for p in range(3)])
    assert {tp.partition: end for tp, end in ends.items()} == committed


def test_nestjs_microservice_event_and_request_reply(cluster, tmp_path):
    group = unique("nest")
    app = NodeProcess(
        "nest-app.js",
        "--brokers",
        cluster.kafka_bootstrap,
        "--group-id",
        group,
        stderr_path=tmp_path / "nest-app.stderr",
    )
    try:
        app.wait_for_line(lambda line: line.get("ready") is True, 30, "the Nest app to start")

        result = run_node(
            "nest-client.js",
            "--brokers",
            cluster.kafka_bootstrap,
            "--group-id",
            group,
            "--timeout-ms",
            "30000",
        )
        assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        lines = json_lines(result.stdout)
        (emitted,) = [line for line in lines if line.get("emitted") == "events.created"]
        (reply,) = [line for line in lines if line.get("pattern") == "math.sum"]
        assert reply == {"pattern": "math.sum", "request": [1, 2, 3], "reply": 6}

        event = app.wait_for_line(
            lambda line: (
                line.get("event") == "events.created" and line.get("payload") == emitted["payload"]
            ),
            20,
            "the Nest app to print the emitted event",
        )
        assert event["payload"]["name"] == "widget"
        assert any(
            line.get("request") == "math.sum" and line.get("result") == 6 for line in app.lines
        ), app.output()
    finally:
        app.stop()


def test_kafkajs_producer_rides_through_a_leader_kill(cluster, tmp_path):
    topic = unique("kafkajs-failover")
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic(topic, num_partitions=1)
        leader = admin.describe_topic(topic).partitions[0].leader_id
    assert leader in cluster.brokers

    count = 400
    producer = NodeProcess(
        "kafkajs-sequence.js",
        "--brokers",
        cluster.kafka_bootstrap,
        "--topic",
        topic,
        "--partition",
        "0",
        "--count",
        str(count),
        "--interval-ms",
        "5",
        "--retries",
        "20",
        stderr_path=tmp_path / "sequence.stderr",
    )
    try:
        producer.wait_for_line(
            lambda line: line.get("n", -1) >= 100 and "offset" in line,
            30,
            "kafkajs to have 100 numbers acknowledged",
        )
        cluster.brokers[leader].kill()
        lines_at_kill = len(producer.lines)
        code = producer.wait(TIMEOUT_S)
        done = producer.wait_for_line(
            lambda line: line.get("done") is True, 5, "the sequence to finish"
        )
    finally:
        producer.stop()

    acked = [line["n"] for line in producer.lines if "offset" in line]
    failed = [line for line in producer.lines if "error" in line]
    assert done["acked"] == len(acked)
    assert lines_at_kill < count, "the sequence ended before the leader was killed"

    with Admin(cluster.bootstrap) as admin:
        new_leader = admin.describe_topic(topic).partitions[0].leader_id
    assert new_leader != leader

    # The guarantee: every number kafkajs saw acknowledged (acks -1) survived the failover.
    stored = [int(r.value) for r in read_partition(cluster.bootstrap, topic, 0)]
    missing = sorted(set(acked) - set(stored))
    assert not missing, f"acknowledged but not stored: {missing}\n{producer.output()}"
    # Not idempotent: a retried send may store a number twice, but in sequence order.
    first_seen = list(dict.fromkeys(stored))
    assert first_seen == sorted(first_seen)
    # And kafkajs rode through the failover by itself: no send failed for good.
    assert code == 0 and not failed and len(acked) == count, producer.output()
