"""Partition.appends_keep_the_epoch, on a real log: what decides whether an append may run
on the event loop (broker/log_writer.py run_small), since an append that starts a new leader
epoch stores the epoch cache with an fsync first."""

from __future__ import annotations

from pathlib import Path

from raftka.broker.log.log import PartitionLog
from raftka.broker.partition import Partition, TopicPartition
from raftka.cluster.image import PartitionRegistration
from raftka.records import patch_offsets
from tests.unit.log.helpers import make_batch, small_config

NOW_MS = 1_700_000_000_000
REPLICAS = (1, 2, 3)


def registration(leader: int, epoch: int) -> PartitionRegistration:
    return PartitionRegistration(replicas=REPLICAS, isr=REPLICAS, leader=leader,
                                 leader_epoch=epoch, partition_epoch=epoch)


def test_only_an_append_in_the_epoch_the_log_last_wrote_keeps_the_epoch(tmp_path: Path):
    log = PartitionLog.open(str(tmp_path / "t-0"), small_config(), NOW_MS)
    partition = Partition(TopicPartition("t", 0), "topic-id", log, 1, 1)
    partition.apply_registration(registration(leader=1, epoch=1), NOW_MS)
    assert partition.appends_keep_the_epoch()  # becoming leader stored epoch 1 already

    partition.apply_registration(registration(leader=2, epoch=2), NOW_MS)
    # a follower of the epoch-2 leader: its first batch of epoch 2 writes the cache
    assert not partition.appends_keep_the_epoch()
    batch = make_batch([b"v"], NOW_MS)
    patch_offsets(batch, 0, log.log_end_offset, 2)
    partition.append_as_follower(bytes(batch), 0, NOW_MS)
    assert log.last_batch_epoch() == 2
    assert partition.appends_keep_the_epoch()
