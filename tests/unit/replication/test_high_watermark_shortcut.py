"""Partition._advance_high_watermark returns at once when the high watermark is at the log
end already (the state of a quiet, fully replicated partition at every follower fetch). The
shortcut must never leave the high watermark where the general rule would have moved it:
over random appends, follower fetches, ISR changes and pending ISR proposals on a real log,
the high watermark after every step is the one the rule gives."""

from __future__ import annotations

import random
from pathlib import Path

from raftka.broker.log.log import PartitionLog
from raftka.broker.partition import Partition, TopicPartition
from raftka.broker.produce_path import parse_produce_data
from raftka.cluster.image import PartitionRegistration
from raftka.proto.raftka.v1 import broker_pb2
from tests.unit.log.helpers import make_batch, small_config

NOW_MS = 1_700_000_000_000
REPLICAS = (1, 2, 3)


def expected_high_watermark(partition: Partition, before: int) -> int:
    """The rule, worked out from the leader's public state without changing it: the
    smallest log end over the maximal ISR, never past the leader's end nor below before."""
    state = partition.leader_state
    assert state is not None
    candidate = partition.log.log_end_offset
    for replica in state.maximal_isr:
        if replica != state.local_id:
            progress = state.follower(replica)
            assert progress is not None
            candidate = min(candidate, max(progress.log_end_offset, 0))
    return max(before, candidate)


def test_the_high_watermark_moves_exactly_as_the_general_rule_says(tmp_path: Path) -> None:
    rng = random.Random(23)
    log = PartitionLog.open(str(tmp_path / "t-0"), small_config(segment_bytes=1 << 20), NOW_MS)
    partition = Partition(TopicPartition("t", 0), "topic-id", log, 1, 1)
    partition.apply_registration(PartitionRegistration(
        replicas=REPLICAS, isr=REPLICAS, leader=1, leader_epoch=1, partition_epoch=0), NOW_MS)
    state = partition.leader_state
    assert state is not None
    now_ms = NOW_MS
    shortcut_taken = 0
    for step in range(3_000):
        now_ms += 1
        action = rng.random()
        before = log.high_watermark
        if action < 0.15:
            parsed = parse_produce_data(broker_pb2.PartitionProduceData(
                topic="t", partition=0,
                record_batches=bytes(make_batch([b"v"] * rng.randint(1, 3), now_ms))), now_ms)
            partition.append_as_leader(*parsed, 1, now_ms)
        elif action < 0.22:
            isr = (1, *sorted(rng.sample((2, 3), rng.randint(0, 2))))
            partition.apply_registration(PartitionRegistration(
                replicas=REPLICAS, isr=isr, leader=1, leader_epoch=1, partition_epoch=step),
                now_ms)
        elif action < 0.27:
            # as the ISR updater does (a proposal sent; one that failed): the high
            # watermark follows at the next fetch, so nothing is checked here
            state.pending_isr = (
                None if rng.random() < 0.5
                else frozenset(state.isr | {rng.choice((2, 3))}))
            continue
        else:
            replica = rng.choice((2, 3))
            progress = state.follower(replica)
            assert progress is not None
            # mostly at the end (the quiet case the shortcut is for), never backwards
            offset = (log.log_end_offset if rng.random() < 0.6
                      else rng.randint(max(progress.log_end_offset, 0), log.log_end_offset))
            expected = expected_high_watermark_after_fetch(partition, replica, offset, before)
            shortcut_taken += (state.high_watermark == log.log_end_offset == before)
            moved = partition.record_follower_fetch(replica, offset, now_ms)
            assert log.high_watermark == expected, f"step {step}"
            assert moved == (expected != before), f"step {step}"
            continue
        # appends and ISR changes move the high watermark by the same rule
        assert log.high_watermark == expected_high_watermark(partition, before), f"step {step}"
    assert shortcut_taken > 500  # the case under test came up, often
    log.close(now_ms)


def expected_high_watermark_after_fetch(
    partition: Partition, replica: int, offset: int, before: int
) -> int:
    state = partition.leader_state
    assert state is not None
    progress = state.follower(replica)
    assert progress is not None
    saved = progress.log_end_offset
    progress.log_end_offset = offset  # what record_fetch will note, for the rule only
    try:
        return expected_high_watermark(partition, before)
    finally:
        progress.log_end_offset = saved
