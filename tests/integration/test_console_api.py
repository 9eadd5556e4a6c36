"""`raftka console`'s JSON API against a real 3-broker cluster, including while a broker
is down."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator

import pytest

from raftka import Admin, Consumer, Producer
from raftka.client.consumer import TopicPartition
from tests.console_harness import ConsoleProcess
from tests.harness import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def three(cluster_factory):
    cluster = cluster_factory(3)
    cluster.start()
    cluster.wait_ready()
    return cluster


@pytest.fixture
def console(three, tmp_path) -> Iterator[ConsoleProcess]:
    process = ConsoleProcess(three.bootstrap, tmp_path / "console.log")
    yield process
    process.stop()


def test_the_api_serves_cluster_topics_messages_and_groups(three, console):
    status, overview = console.get("overview")
    assert status == 200 and overview["alive"] == 3 and overview["controller"] >= 1
    assert overview["quorum"]["voters"] == [1, 2, 3]
    assert console.request("POST", "topics", {"name": "api", "partitions": 2})[0] == 201
    assert console.request("POST", "topics", {"name": "api", "partitions": 2})[0] == 409
    assert console.request("POST", "topics", {"name": "bad", "partitions": "x"})[0] == 400
    names = [t["name"] for t in console.get("topics")[1]["topics"]]
    assert "api" in names
    status, detail = console.get("topics/api")
    assert status == 200 and len(detail["partitions"]) == 2
    assert console.get("topics/missing")[0] == 404

    with Producer(bootstrap_servers=three.bootstrap) as producer:
        for i in range(5):
            producer.send("api", value=json.dumps({"n": i}).encode(), key=b"k", partition=0)
        producer.flush()
    status, page = console.get("topics/api/partitions/0/messages?from=earliest&limit=3")
    assert status == 200 and [r["offset"] for r in page["records"]] == [0, 1, 2]
    assert page["records"][0]["value"]["kind"] == "json" and page["next_offset"] == 3
    latest = console.get("topics/api/partitions/0/messages?from=latest&limit=2")[1]
    assert [r["offset"] for r in latest["records"]] == [3, 4]
    at = console.get("topics/api/partitions/0/messages?from=offset&value=4")[1]
    assert [r["offset"] for r in at["records"]] == [4]
    assert console.get("topics/api/partitions/0/messages?from=sideways")[0] == 400

    status, produced = console.request("POST", "topics/api/messages", {
        "key": "ui", "value": "from the console", "partition": 1,
        "headers": [{"key": "source", "value": "api"}]})
    assert status == 201 and produced["partition"] == 1
    consumer = Consumer(bootstrap_servers=three.bootstrap, auto_offset_reset="earliest")
    consumer.assign([TopicPartition("api", 1)])
    found: list = []
    wait_for(lambda: found.extend(r for rs in consumer.poll(timeout_ms=200).values() for r in rs)
             or found, 10, "the console's record")
    consumer.close()
    assert found[0].value == b"from the console" and found[0].key == b"ui"
    assert [(k, v) for k, v in found[0].headers] == [("source", b"api")]

    group = Consumer(bootstrap_servers=three.bootstrap, group_id="console-g",
                     auto_offset_reset="earliest", enable_auto_commit=False)
    group.subscribe(["api"])
    seen = 0

    def consumed() -> bool:
        nonlocal seen
        seen += sum(len(r) for r in group.poll(timeout_ms=200).values())
        return seen >= 6

    wait_for(consumed, 30, "the group to read every record")
    group.commit()
    wait_for(lambda: console.get("groups/console-g")[1].get("total_lag") == 0, 15, "lag 0")
    detail = console.get("groups/console-g")[1]
    assert detail["members"] and {o["partition"] for o in detail["offsets"]} == {0, 1}
    assert "console-g" in [g["group_id"] for g in console.get("groups")[1]["groups"]]
    # offsets of a group with members cannot be reset
    status, refused = console.request("POST", "groups/console-g/reset-offsets",
                                      {"topic": "api", "to": "earliest"})
    assert status == 409, refused
    group.close()
    assert console.request("DELETE", "topics/api")[0] == 200


def test_it_keeps_serving_and_streams_the_failover_while_a_broker_is_down(three, console):
    with Admin(bootstrap_servers=three.bootstrap) as admin:
        admin.create_topic("f", num_partitions=3, replication_factor=3)
    wait_for(lambda: any(t["name"] == "f" for t in (console.get("live")[1]["state"] or {})
                         .get("topics", [])), 10, "the live state to show the topic")
    victim = next(i for i in (1, 2, 3) if i != console.get("overview")[1]["controller"])
    stream = urllib.request.urlopen(f"{console.url}/api/events", timeout=30)
    killed_at = time.monotonic()
    three.brokers[victim].kill()
    kinds: set[str] = set()
    while not {"BROKER", "LEADER"} <= kinds:
        line = stream.readline().decode()
        if line.startswith("data: "):
            kinds.add(json.loads(line[6:])["event"]["kind"])
        assert time.monotonic() - killed_at < 15, f"events seen: {kinds}"
    stream.close()
    overview = console.get("overview")[1]
    assert [b["state"] for b in overview["brokers"] if b["id"] == victim] == ["fenced"]
    assert console.get("topics/f")[0] == 200
    assert console.get("topics/f/partitions/0/messages")[0] == 200
    # the victim was the first bootstrap broker or not: either way every page still answers
    three.brokers[victim].start()


def test_throughput_from_the_brokers_metrics_and_a_live_tail(three, tmp_path):
    console = ConsoleProcess(three.bootstrap, tmp_path / "console-metrics.log",
                             metrics=[f"127.0.0.1:{three.brokers[i].metrics_port}"
                                      for i in (1, 2, 3)])
    try:
        with Admin(three.bootstrap) as admin:
            admin.create_topic("tailed", num_partitions=1)
        tail = urllib.request.urlopen(f"{console.url}/api/topics/tailed/partitions/0/tail",
                                      timeout=15)
        assert tail.headers["Content-Type"].startswith("text/event-stream")
        assert tail.readline() == b"event: position\n" and tail.readline() == b"data: 0\n"
        producer = Producer(bootstrap_servers=three.bootstrap, linger_ms=0)
        producer.send("tailed", value=b"first", key=b"k1").get(timeout=10)
        producer.send("tailed", value=b"second").get(timeout=10)
        pushed: list[dict] = []
        while len(pushed) < 2:
            line = tail.readline()
            if line.startswith(b"data: "):
                pushed.extend(json.loads(line[len(b"data: "):]))
        tail.close()
        assert [(r["offset"], r["value"]["text"]) for r in pushed] == [(0, "first"),
                                                                       (1, "second")]
        assert pushed[0]["key"]["text"] == "k1"

        def busy_then_charted() -> bool:
            for i in range(10):
                producer.send("tailed", value=b"x%d" % i)
            producer.flush()
            points = console.get("throughput")[1]["points"]
            return any(p["records_in"] > 0 and p["bytes_in"] > 0 for p in points)

        wait_for(busy_then_charted, 30, "records/s and bytes/s in on the throughput chart")
        producer.close()
        status, body = console.get("throughput")
        assert status == 200 and len(body["metrics"]) == 3
    finally:
        console.stop()
