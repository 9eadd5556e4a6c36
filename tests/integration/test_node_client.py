"""The Node.js example client (examples/node) against a real broker, checked with the Python SDK."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from raftka import Consumer, Producer
from raftka.client.consumer import TopicPartition

pytestmark = [pytest.mark.integration, pytest.mark.node]

NODE_DIR = Path(__file__).resolve().parents[2] / "examples" / "node"
NODE = shutil.which("node")
TIMEOUT_S = 30

if NODE is None:
    pytestmark.append(pytest.mark.skip(reason="node is not on the PATH (Node.js 18+ is needed)"))
elif not (NODE_DIR / "node_modules").is_dir():
    pytestmark.append(
        pytest.mark.skip(
            reason=f"{NODE_DIR / 'node_modules'} is missing: run `npm install` in {NODE_DIR} "
            "(`make test` does it)"
        )
    )


def run_node(script: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    assert NODE is not None
    return subprocess.run(
        [NODE, script, *args],
        cwd=NODE_DIR,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def read_back(bootstrap: str, topic: str, expected: int, timeout_s: float = 10) -> list:
    consumer = Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    consumer.assign([TopicPartition(topic, 0)])
    records: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def test_node_producer_records_are_read_by_the_python_consumer(broker):
    values = ["hello", "wörld ✓", "", "-dash", "last"]
    result = run_node(
        "producer.js", "--bootstrap", broker.bootstrap, "--topic", "from-node", "--", *values
    )
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout) == [
        {"partition": 0, "base_offset": offset} for offset in range(len(values))
    ]

    # Lines from stdin, with a key, continue at the next offsets.
    result = run_node(
        "producer.js",
        "--bootstrap",
        broker.bootstrap,
        "--topic",
        "from-node",
        "--partition",
        "0",
        "--key",
        "k1",
        stdin="six\nseven\n",
    )
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout) == [
        {"partition": 0, "base_offset": 5},
        {"partition": 0, "base_offset": 6},
    ]

    records = read_back(broker.bootstrap, "from-node", expected=7)
    assert [(r.offset, r.key, r.value) for r in records] == [
        (0, None, b"hello"),
        (1, None, "wörld ✓".encode()),
        (2, None, b""),
        (3, None, b"-dash"),
        (4, None, b"last"),
        (5, b"k1", b"six"),
        (6, b"k1", b"seven"),
    ]
    assert {(r.topic, r.partition) for r in records} == {("from-node", 0)}


def test_node_consumer_reads_what_the_python_producer_sent(broker):
    with Producer(broker.bootstrap) as producer:
        producer.send("to-node", b"value-0", key=b"k").get(10)
        producer.send("to-node", b"value-1", key=b"k").get(10)
        producer.send("to-node", "välue-2 ✓".encode()).get(10)

    result = run_node(
        "consumer.js",
        "--bootstrap",
        broker.bootstrap,
        "--topic",
        "to-node",
        "--from-beginning",
        "--max-messages",
        "3",
    )
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout) == [
        {"partition": 0, "offset": 0, "key": "k", "value": "value-0"},
        {"partition": 0, "offset": 1, "key": "k", "value": "value-1"},
        {"partition": 0, "offset": 2, "key": None, "value": "välue-2 ✓"},
    ]

    # --max-messages stops early; --timeout-ms ends a read that has nothing more to see.
    result = run_node(
        "consumer.js",
        "--bootstrap",
        broker.bootstrap,
        "--topic",
        "to-node",
        "--from-beginning",
        "--max-messages",
        "1",
    )
    assert result.returncode == 0, result.stderr
    assert [line["offset"] for line in json_lines(result.stdout)] == [0]

    started = time.monotonic()
    result = run_node(
        "consumer.js", "--bootstrap", broker.bootstrap, "--topic", "to-node", "--timeout-ms", "700"
    )
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout) == []  # starts at the latest offset: nothing new
    assert time.monotonic() - started < 15


def test_node_producer_reports_an_invalid_topic_name(broker):
    result = run_node(
        "producer.js", "--bootstrap", broker.bootstrap, "--topic", "bad topic!", "value"
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "INVALID_TOPIC_EXCEPTION" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
