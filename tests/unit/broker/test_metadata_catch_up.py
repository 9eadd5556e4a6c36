"""A starting broker acts on metadata only once it has caught up to its own registration.

Found by the fault harness (torn-tail, seed 41): a broker restarted with a Raft journal
replayed it image by image and acted on each one: "leader at epoch 0", then 2, 4 and 6 for
partitions it had lost long before, writing each epoch into its epoch cache and opening group
coordinators another broker held. Kafka's brokers publish metadata only after their initial
catch-up; so does the ReplicaManager now, and it skips the images queued meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from raftka.broker.controller_client import ChannelPool
from raftka.broker.errors import NotLeaderError
from raftka.broker.log.checkpoint import EPOCH_CHECKPOINT_FILE
from raftka.broker.log_writer import LogWriter
from raftka.broker.partition import TopicPartition
from raftka.broker.purgatory import Purgatory
from raftka.broker.replica_manager import ReplicaManager, ReplicaManagerSettings
from raftka.broker.replication.fetcher import FetcherManager
from raftka.cluster import records
from raftka.cluster.image import MetadataImage
from tests.unit.cluster.helpers import apply_records, image_with_brokers

ME = 1
TOPIC_ID = "t-id"


def history() -> list[MetadataImage]:
    """Leadership of t-0 moves 1 -> 2 -> 1 -> 2 -> 1, then broker 1 registers again."""
    image = image_with_brokers(1, 2)
    images = [apply_records(image, [
        records.topic("t", TOPIC_ID, {}),
        records.partition(TOPIC_ID, 0, [1, 2], [1, 2], leader=1),
    ])]
    for leader in (2, 1, 2, 1):
        images.append(apply_records(images[-1], [records.partition_change(TOPIC_ID, 0,
                                                                          leader=leader)]))
    images.append(apply_records(images[-1], [
        records.register_broker(ME, "inc-new", "127.0.0.1", 9001, 0, voter=True, pid=7,
                                fenced=True),
    ]))
    return images


def manager(log_dir: Path) -> ReplicaManager:
    clock = lambda: 1_700_000_000_000  # noqa: E731
    writer, purgatory = LogWriter(), Purgatory()
    fetchers = FetcherManager(ME, ChannelPool(), lambda _b: None, writer.run, clock,
                              lambda: -1, purgatory.notify)
    return ReplicaManager(
        ReplicaManagerSettings(broker_id=ME, log_dir=str(log_dir), topic_config_defaults={}),
        clock, writer, purgatory, fetchers,
    )


def run_history(log_dir: Path, register_at: int | None, wait_s: float = 5.0) -> ReplicaManager:
    async def main() -> ReplicaManager:
        replicas = manager(log_dir)
        replicas.start()
        images = history()
        previous = MetadataImage()
        for image in images:  # as a journal replay publishes them: back to back
            replicas.on_metadata(previous, image)
            previous = image
        if register_at is not None:
            replicas.on_registered(register_at)
        await replicas.wait_for_metadata(lambda i: i.offset >= images[-1].offset, wait_s)
        await asyncio.sleep(0.05)
        await replicas.close()
        return replicas

    return asyncio.run(main())


def test_nothing_is_applied_before_the_broker_has_registered(tmp_path):
    replicas = run_history(tmp_path, register_at=None, wait_s=0.3)
    assert not replicas.caught_up
    assert replicas.applied_offset == 0
    assert replicas.partitions == {}
    assert not (tmp_path / "t-0").exists()


def test_a_replayed_history_is_applied_once_at_the_registration(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="raftka.broker")
    images = history()
    replicas = run_history(tmp_path, register_at=images[-1].offset)
    assert replicas.caught_up
    assert replicas.applied_offset == images[-1].offset
    final = images[-1].topics["t"].partitions[0]
    assert (final.leader, final.leader_epoch) == (ME, 4)
    claims = [r.getMessage() for r in caplog.records if "leader at epoch" in r.getMessage()]
    assert claims == ["t-0: leader at epoch 4 (ISR [1, 2])"]
    stored = json.loads((tmp_path / "t-0" / EPOCH_CHECKPOINT_FILE).read_text())
    assert stored == {"entries": [[4, 0]]}


def test_a_broker_still_catching_up_answers_not_leader_never_unknown_topic(tmp_path):
    """Seen when the gate first ran under the fault harness: raftka producers failed 169
    writes with UNKNOWN_TOPIC_OR_PARTITION from a broker that had just restarted."""
    replicas = run_history(tmp_path, register_at=None, wait_s=0.1)
    with pytest.raises(NotLeaderError, match="catching up on cluster metadata"):
        replicas.leader_partition(TopicPartition("t", 0))


def test_a_topic_a_starting_broker_does_not_know_yet_is_not_answered_unknown():
    """librdkafka fails every queued message of a topic a Metadata answer calls unknown
    (the fault harness saw 28 confluent-kafka writes fail after a broker restarted)."""
    from raftka.broker import metadata_view
    from raftka.broker.errors import Code
    from raftka.broker.kafka.admin_handlers import _topic_metadata

    empty = MetadataImage()
    starting = metadata_view.metadata_response(empty, ["orders"], None, catching_up=True)
    assert starting.topics[0].error_code == Code.LEADER_NOT_AVAILABLE
    settled = metadata_view.metadata_response(empty, ["orders"], None)
    assert settled.topics[0].error_code == Code.UNKNOWN_TOPIC_OR_PARTITION
    assert _topic_metadata(empty, "orders", None, True)["error_code"] == Code.LEADER_NOT_AVAILABLE
    assert _topic_metadata(empty, "orders", None)["error_code"] == Code.UNKNOWN_TOPIC_OR_PARTITION


def test_a_hand_over_of_many_partitions_is_one_trip_to_the_writer_thread(tmp_path):
    """A controlled shutdown changes every ISR the stopping broker is in, in one batch. Each
    partition's registration used to take its own trip to the writer thread, queued behind
    appends: with ~130 partitions the leader changes among them waited 300-500 ms."""

    async def main() -> int:
        replicas = manager(tmp_path)
        replicas.start()
        image = image_with_brokers(1, 2, 3)
        image = apply_records(image, [records.topic("t", TOPIC_ID, {})] + [
            records.partition(TOPIC_ID, i, [2, 1, 3], [2, 1, 3], leader=2) for i in range(30)
        ])
        replicas.on_metadata(MetadataImage(), image)
        replicas.on_registered(image.brokers[ME].epoch)
        assert await replicas.wait_for_metadata(lambda i: i.offset >= image.offset, 5)
        trips = 0
        real_run = replicas._writer.run

        async def counting(function, *args):
            nonlocal trips
            trips += 1
            return await real_run(function, *args)

        replicas._writer.run = counting  # type: ignore[method-assign]
        handed = apply_records(image, [records.fence_broker(2)] + [
            records.partition_change(TOPIC_ID, i, leader=1, isr=[1, 3]) for i in range(30)
        ])
        replicas.on_metadata(image, handed)
        assert await replicas.wait_for_metadata(lambda i: i.offset >= handed.offset, 5)
        assert all(replicas.partitions[TopicPartition("t", i)].is_leader for i in range(30))
        applying = trips
        await replicas.close()
        return applying

    assert asyncio.run(main()) == 1


def test_a_new_leader_grants_its_followers_a_lag_period_from_when_it_took_over(
    tmp_path, monkeypatch
):
    """Seen with 1,000 partitions on a loaded machine: creating them took ~10 s of partition
    opening, and the leaders' followers were judged from a clock read before that, so every
    leader proposed shrinking its ISR to itself within a second of the creation (334 at
    once), and some of those partitions never got their ISR back."""
    now = [1_700_000_000_000]

    def clock() -> int:
        return now[0]

    opened = ReplicaManager._open_partition

    async def slow_open(self, tp, hosted):  # opening takes 20 s of the clock
        partition = await opened(self, tp, hosted)
        now[0] += 20_000
        return partition

    monkeypatch.setattr(ReplicaManager, "_open_partition", slow_open)
    image = apply_records(image_with_brokers(1, 2), [
        records.topic("t", TOPIC_ID, {}),
        records.partition(TOPIC_ID, 0, [1, 2], [1, 2], leader=ME),
    ])

    async def main() -> ReplicaManager:
        writer, purgatory = LogWriter(), Purgatory()
        fetchers = FetcherManager(ME, ChannelPool(), lambda _b: None, writer.run, clock,
                                  lambda: -1, purgatory.notify)
        replicas = ReplicaManager(
            ReplicaManagerSettings(broker_id=ME, log_dir=str(tmp_path),
                                   topic_config_defaults={}),
            clock, writer, purgatory, fetchers,
        )
        replicas.start()
        replicas.on_metadata(MetadataImage(), image)
        replicas.on_registered(image.offset)
        await replicas.wait_for_metadata(lambda i: i.offset >= image.offset, 5.0)
        await asyncio.sleep(0.05)
        await replicas.close()
        return replicas

    replicas = asyncio.run(main())
    state = replicas.partitions[TopicPartition("t", 0)].leader_state
    assert state is not None
    assert state.lagging_followers(now[0] + 1, lag_max_ms=10_000) == set()
