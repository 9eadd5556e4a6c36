"""A produce for a topic that another broker auto-created a moment ago waits until this broker
has applied the creation: kafka-python 2.0.2 (no retries by default) lost whole writes to
UNKNOWN_TOPIC_OR_PARTITION (or NOT_LEADER) in 5 of 47 runs of the kafka-python 2.0.2 test
of tests/integration/test_kafka_clients.py on a busy 2-core machine; 0 of 12 with the wait."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from raftka.broker.produce_path import AUTO_CREATE_METADATA_WAIT_S, ProducePath


class Replicas:
    """The broker's own metadata lags: the topic shows up only when it is waited for."""

    def __init__(self) -> None:
        self.image = SimpleNamespace(topics={})
        self.waits: list[float] = []
        self.caught_up = True

    async def wait_for_metadata(self, condition: Any, timeout_s: float) -> bool:
        self.waits.append(timeout_s)
        self.image = SimpleNamespace(topics={"fresh": object()})  # the record is applied
        return bool(condition(self.image))


def test_a_topic_created_elsewhere_is_waited_for_after_auto_create():
    replicas = Replicas()
    created: list[str] = []

    async def auto_create(topic: str) -> None:
        created.append(topic)  # the controller says TOPIC_ALREADY_EXISTS: nothing to do

    path = ProducePath(replicas, produce_timeout_max_ms=1000,  # type: ignore[arg-type]
                       auto_create=auto_create, lease_problem=lambda: None)
    asyncio.run(path._ensure_topic("fresh", 0))
    assert created == ["fresh"]
    assert replicas.waits == [AUTO_CREATE_METADATA_WAIT_S]
    assert "fresh" in replicas.image.topics
    asyncio.run(path._ensure_topic("fresh", 0))  # known now: no create, no wait
    assert created == ["fresh"] and len(replicas.waits) == 1
