"""bench/partition_scale.py's per-broker request counts: what moved between two scrapes."""

from __future__ import annotations

from bench.partition_scale import counts_between


def test_only_the_requests_answered_in_between_are_counted() -> None:
    before = {1: {"replication/Fetch": 10.0, "grpc/Metadata": 4000.0}, 2: {}}
    after = {1: {"replication/Fetch": 250.0, "grpc/Metadata": 4000.0, "kafka/Produce": 7.0},
             2: {"replication/Fetch": 3.0}}
    assert counts_between(before, after) == {
        1: {"kafka/Produce": 7, "replication/Fetch": 240},
        2: {"replication/Fetch": 3},
    }
