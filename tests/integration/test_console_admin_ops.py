"""The console's forms for the admin operations (edit configs, add partitions, delete
records), through its JSON API against a real 3-broker cluster: changes land in the
cluster, and refusals are 409s that name the problem and change nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from raftka import Admin, Producer
from tests.console_harness import ConsoleProcess

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


def test_configs_partitions_and_records_from_the_console(three, console):
    assert console.request("POST", "topics", {"name": "ui-ops", "partitions": 1})[0] == 201
    status, _ = console.request("POST", "topics/ui-ops/configs",
                                {"set": {"retention.ms": "120000"}})
    assert status == 200
    status, refused = console.request("POST", "topics/ui-ops/configs",
                                      {"set": {"retention.ms": "soon"}})
    assert status == 409 and refused["error"] == "InvalidConfigError"
    assert "retention.ms" in refused["message"]
    detail = console.get("topics/ui-ops")[1]
    assert {c["name"]: c["value"] for c in detail["configs"] if not c["default"]} == {
        "retention.ms": "120000"}
    assert console.request("POST", "topics/ui-ops/configs",
                           {"delete": ["retention.ms"]})[0] == 200
    assert all(c["default"] for c in console.get("topics/ui-ops")[1]["configs"])

    assert console.request("POST", "topics/ui-ops/partitions", {"count": 3})[0] == 200
    status, refused = console.request("POST", "topics/ui-ops/partitions", {"count": 2})
    assert status == 409 and "INVALID_PARTITIONS" in refused["message"]
    assert len(console.get("topics/ui-ops")[1]["partitions"]) == 3

    with Producer(bootstrap_servers=three.bootstrap, acks="all") as producer:
        for i in range(6):
            producer.send("ui-ops", str(i).encode(), partition=0)
        producer.flush()
    status, trimmed = console.request("POST", "topics/ui-ops/delete-records",
                                      {"partition": 0, "before": 4})
    assert status == 200 and trimmed == {"log_start_offset": 4}
    status, refused = console.request("POST", "topics/ui-ops/delete-records",
                                      {"partition": 0, "before": 99})
    assert status == 409 and "OFFSET_OUT_OF_RANGE" in refused["message"]
    with Admin(three.bootstrap) as admin:
        assert admin.describe_topic("ui-ops").partitions[0].log_start_offset == 4
